"""What `make kind` does that can be checked without a container engine (README "kind").

hack/kind.sh cannot run here (no Docker, no kind node image).  Its script is shellchecked by
`make lint`; this renders the chart with exactly the values it installs and has the real API
server validate the result, and checks that the image it builds, loads and installs is one
and the same name.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml

from .conftest import REPO, Environment

KIND_SCRIPT = REPO / "hack" / "kind.sh"
KIND_VALUES = REPO / "hack" / "kind-values.yaml"


def rendered(env: Environment, namespace: str, release: str = "miosa-operator") -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            str(env.bin_dir / "helm"),
            "template",
            release,
            str(REPO / "charts" / "miosa-operator"),
            "--namespace",
            namespace,
            "--values",
            str(KIND_VALUES),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kind_values_render_the_loaded_image_never_pulled(env: Environment) -> None:
    (deployment,) = [d for d in rendered(env, "miosa-system") if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    image = re.search(r'^IMAGE="([^"]+)"', KIND_SCRIPT.read_text(), re.M)
    assert image, "hack/kind.sh names the image it builds and loads"
    assert container["image"] == image.group(1)
    assert container["imagePullPolicy"] == "Never", "kind load puts the image on the node; nothing may pull it"
    static_image = {e["name"]: e.get("value") for e in container["env"]}["MIOSA_STATIC_SERVER_IMAGE"]
    assert static_image == image.group(1), "static server pods use the loaded image too"
    assert 'docker build -t "$IMAGE"' in KIND_SCRIPT.read_text()
    assert 'kind load docker-image "$IMAGE"' in KIND_SCRIPT.read_text()


def test_kind_install_is_accepted_by_the_api_server(env: Environment, crds: None, namespace: str) -> None:
    # Another release name: the suite's own operator already has objects named miosa-operator*.
    docs = [d for d in rendered(env, namespace, "kind-check") if d["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    result = env.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert result.returncode == 0, result.stderr


def test_kind_applies_examples_that_exist() -> None:
    applied = re.findall(r"\$REPO/(examples/[\w./-]+\.yaml)", KIND_SCRIPT.read_text())
    assert applied and all((REPO / path).is_file() for path in applied)
    assert subprocess.run(["bash", "-n", str(KIND_SCRIPT)], check=False).returncode == 0
