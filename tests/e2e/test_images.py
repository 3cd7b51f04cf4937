"""The operator image hack/build-images.sh builds against the Dockerfile users build.

No container engine runs here, so the Dockerfile itself cannot be built; what can be checked
is that the two recipes say the same and that the built image holds what the Dockerfile's
`pip install .` would: the same Debian packages in each stage, the same image config (ENV,
USER, ENTRYPOINT, CMD, LABEL), and the same Python distributions as this checkout's own
resolution of pyproject.toml (names; versions may differ by resolution date), with pip
uninstalled as the Dockerfile does.  The image itself is read from its OCI archive.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tarfile
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import REPO

pytestmark = pytest.mark.realnode

# The operator's archive is named by the hash of its inputs (the last of `paths`).
ARCHIVE = Path(
    subprocess.run(
        ["bash", str(REPO / "hack" / "build-images.sh"), "paths"], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
)


# ----------------------------------------------------------------------------- the Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """[(INSTRUCTION, arguments)] per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(args.split())))
    return stages


def apt_packages(stage: list[tuple[str, str]]) -> set[str]:
    packages: set[str] = set()
    for instruction, args in stage:
        if instruction == "RUN" and "apt-get install" in args:
            words = shlex.split(args.split("apt-get install", 1)[1].split("&&")[0])
            packages |= {w for w in words if not w.startswith("-")}
    return packages


def key_values(args: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(args))


def dockerfile_config() -> dict[str, Any]:
    final = dockerfile_stages()[-1]
    config: dict[str, Any] = {"Env": [], "Labels": {}}
    for instruction, args in final:
        if instruction == "ENV":
            config["Env"] += [f"{k}={v}" for k, v in key_values(args).items()]
        elif instruction == "LABEL":
            config["Labels"].update(key_values(args))
        elif instruction == "USER":
            config["User"] = args
        elif instruction in ("ENTRYPOINT", "CMD"):
            config[instruction.title()] = json.loads(args)
    return config


# ----------------------------------------------------------------------------- the image


READ = ("etc/passwd",)
"""Files whose content the tests read (the last layer that has one wins)."""


@cache
def image() -> tuple[dict[str, Any], list[str], dict[str, bytes]]:
    """(config, member names of every layer, contents of READ) of the built operator image."""
    if not ARCHIVE.exists():
        pytest.fail(f"{ARCHIVE} is missing: run hack/build-images.sh (make images)")
    with tarfile.open(ARCHIVE) as outer:

        def blob(digest: str) -> Any:
            return outer.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")

        index = json.load(outer.extractfile("index.json"))
        manifest = json.load(blob(index["manifests"][0]["digest"]))
        config = json.load(blob(manifest["config"]["digest"]))["config"]
        names: list[str] = []
        contents: dict[str, bytes] = {}
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=blob(layer["digest"]), mode="r|") as inner:
                for member in inner:
                    names.append(member.name)
                    if member.name in READ and member.isfile():
                        contents[member.name] = inner.extractfile(member).read()
    return config, names, contents


def image_distributions() -> dict[str, str]:
    """{normalised name: version} of the distributions installed in /opt/miosa."""
    found = {}
    for name in image()[1]:
        match = re.fullmatch(r"opt/miosa/lib/python3\.\d+/site-packages/([^/]+)-([^-/]+)\.dist-info", name)
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def resolved_here(project: str = "miosa-operator") -> set[str]:
    """The runtime closure of ``project`` as installed in this checkout's venv (no extras)."""
    seen: set[str] = set()
    todo = [project]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


# ----------------------------------------------------------------------------- tests


def test_build_script_installs_the_dockerfile_debian_packages() -> None:
    build, final = dockerfile_stages()
    script = (REPO / "hack" / "build-images.sh").read_text()
    include = re.search(r"--include=([\w.,-]+)", script)
    assert include, "build-images.sh names its Debian packages with debootstrap --include"
    assert set(include.group(1).split(",")) == apt_packages(build)
    assert apt_packages(final) == apt_packages(build) - {"python3-venv"}
    assert "python3 -m venv /opt/miosa" in script and "pip uninstall -y" in script
    suite = re.search(r"^DEBIAN_SUITE=(\w+)", (REPO / "hack" / "versions.env").read_text(), re.M)
    assert suite and {args.split()[0] for _, args in build[:1] + final[:1]} == {f"debian:{suite.group(1)}-slim"}


def test_image_config_is_the_dockerfile_config() -> None:
    config = image()[0]
    assert {k: config.get(k) for k in ("Env", "User", "Entrypoint", "Cmd", "Labels")} == dockerfile_config()


def test_image_has_the_python_packages_the_project_resolves_to() -> None:
    installed = image_distributions()
    assert "pip" not in installed, "the Dockerfile uninstalls pip from the venv"
    assert set(installed) == resolved_here(), {
        "only in the image": sorted(set(installed) - resolved_here()),
        "only in this checkout's venv": sorted(resolved_here() - set(installed)),
    }
    assert installed["miosa-operator"] == metadata.version("miosa-operator")


def test_image_runs_as_the_dockerfile_user_with_the_entrypoint_on_path() -> None:
    _, names, contents = image()
    assert "opt/miosa/bin/miosa-operator" in names
    assert "miosa:x:10001:10001::/tmp:/usr/sbin/nologin" in contents["etc/passwd"].decode().splitlines()
    assert "usr/bin/python3" in names or "usr/bin/python3.13" in names
    assert not any(Path(n).parts[:2] == ("var", "cache") and n.endswith(".deb") for n in names)
