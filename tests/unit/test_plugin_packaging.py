"""The light kubectl-miosa distribution (packaging/kubectl-miosa, hack/build-plugin.sh): the
wheel depends on PyYAML only, the zipapp runs without any installed package, and the krew
manifest describes its archive."""

from __future__ import annotations

import email
import hashlib
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging" / "kubectl-miosa"


def listed() -> set[str]:
    lines = (PACKAGING / "files.txt").read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def test_files_txt_lists_what_the_plugin_imports() -> None:
    code = (
        "import sys, json; import miosa_operator.plugin.cli, miosa_operator.plugin.completion, miosa_operator.plugin.__main__;"
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith('miosa_operator'))))"
    )
    files = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    imported = {str(Path(f).relative_to(REPO / "operator")) for f in files}
    assert imported <= listed(), f"add to packaging/kubectl-miosa/files.txt: {sorted(imported - listed())}"
    for name in listed():
        assert (REPO / "operator" / name).is_file(), name


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plugin")
    subprocess.run(["bash", str(REPO / "hack" / "build-plugin.sh"), str(out)], check=True, capture_output=True, timeout=300,
                   env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(out)})  # fmt: skip
    return out


def test_the_wheel_needs_only_pyyaml(built: Path) -> None:
    (wheel,) = built.glob("kubectl_miosa-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(info))
        points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    required = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert [r.split(">")[0].split("<")[0].lower() for r in required] == ["pyyaml"]
    assert "kubectl-miosa = miosa_operator.plugin.cli:main" in points
    assert "kubectl_complete-miosa = miosa_operator.plugin.completion:main" in points
    assert {n for n in names if n.startswith("miosa_operator/")} == listed()
    assert not any(n.startswith("miosa_operator/controllers/") or n.endswith("handlers.py") for n in names)


def test_the_zipapp_runs_on_a_bare_python(built: Path) -> None:
    # -I -S: no site-packages at all (no PyYAML C extension, no kopf, no kubernetes client).
    bare = [sys.executable, "-I", "-S"]
    done = subprocess.run([*bare, str(built / "kubectl-miosa"), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage: kubectl miosa" in done.stdout
    done = subprocess.run(
        [*bare, str(built / "kubectl_complete-miosa"), "versions", ""], capture_output=True, text=True, timeout=60
    )
    assert done.stdout == "list\nshow\n:4\n"
    kubeconfig = built / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}], "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x",
    }))  # fmt: skip
    done = subprocess.run([*bare, str(built / "kubectl-miosa"), "--kubeconfig", str(kubeconfig), "versions", "list", "site"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 5 and "connection refused" in done.stderr  # it parsed the kubeconfig and dialled


def test_the_krew_manifest_describes_its_archive(built: Path) -> None:
    manifest = yaml.safe_load((built / "miosa.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and manifest["kind"] == "Plugin"
    assert manifest["metadata"]["name"] == "miosa" and manifest["spec"]["version"].startswith("v0.")
    archive = built / "kubectl-miosa.tar.gz"
    (platform,) = manifest["spec"]["platforms"]
    assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert platform["uri"] == f"file://{archive}"
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert platform["bin"] in members and members[platform["bin"]].mode & 0o111
    assert {f["from"] for f in platform["files"]} <= set(members)
    assert manifest["spec"]["shortDescription"] and len(manifest["spec"]["shortDescription"]) <= 50
