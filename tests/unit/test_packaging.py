"""The packaged copies (Helm chart, kustomize base) never drift from their sources.

crds/ is generated from the models (tests/unit/test_crds.py); the chart's crds/ folder and
manifests/crds/ are byte-for-byte copies, and manifests/operator/ is rendered from the chart.
`hack/sync-manifests.sh` rewrites all of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "crds"
COPIES = [REPO / "charts" / "miosa-operator" / "crds", REPO / "manifests" / "crds"]
HINT = "run hack/sync-manifests.sh"


def _yaml_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.yaml")) if p.name != "kustomization.yaml"}


@pytest.mark.parametrize("copy", COPIES, ids=lambda p: str(p.relative_to(REPO)))
def test_crd_copies_equal_the_generated_crds(copy: Path) -> None:
    source = _yaml_files(SOURCE)
    assert source, "crds/ is empty"
    copied = _yaml_files(copy)
    assert sorted(copied) == sorted(source), f"{copy.relative_to(REPO)} has other files than crds/: {HINT}"
    for name, data in source.items():
        assert copied[name] == data, f"{copy.relative_to(REPO)}/{name} differs from crds/{name}: {HINT}"


def test_kustomize_crds_lists_every_crd() -> None:
    kustomization = yaml.safe_load((REPO / "manifests" / "crds" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(_yaml_files(SOURCE)), HINT


def test_kustomize_base_includes_crds_and_operator() -> None:
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "miosa-system"
    assert {"crds", "operator", "namespace.yaml"} <= set(kustomization["resources"])
    for resource in kustomization["resources"]:
        assert (REPO / "manifests" / resource).exists(), resource


def test_chart_app_version_matches_the_package() -> None:
    chart = yaml.safe_load((REPO / "charts" / "miosa-operator" / "Chart.yaml").read_text())
    project = (REPO / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in project


def test_the_image_refuses_a_python_without_the_tarfile_fixes() -> None:
    """The Dockerfile's final stage runs the check; this (unpatched) interpreter fails it."""
    import subprocess
    import sys

    from miosa_operator.ingest.patched import missing_fixes

    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "RUN /opt/miosa/bin/python -m miosa_operator.ingest.patched" in final_stage
    checked = subprocess.run([sys.executable, "-m", "miosa_operator.ingest.patched"], capture_output=True, text=True)
    assert checked.returncode == (1 if missing_fixes() else 0)
    if sys.version_info < (3, 11, 10):  # this machine's 3.11.7 has neither fix
        assert "CVE-2024-6232" in checked.stderr and "CVE-2025-8194" in checked.stderr
