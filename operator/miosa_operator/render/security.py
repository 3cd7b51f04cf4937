"""Pod Security "restricted" for every pod the operator creates.

Clusters that host other people's code enforce the ``restricted`` Pod Security Standard on
tenant namespaces, and the API server refuses any pod that does not meet it.  Every pod
template the operator renders (static server and its fetch init container, a dynamic
version's verification workload and live workload) therefore starts from these contexts:
non-root, no privilege escalation, no capabilities, the runtime's default seccomp profile and
a read-only root filesystem (writable paths are emptyDir volumes with a ``sizeLimit``).

What a Deployment may relax for an image that needs it (running as root, a writable root
filesystem) is decided by the renderer of that pod, never silently: the namespace's policy
still has the last word at admission.
"""

from __future__ import annotations

from ..api.types import Obj

NONROOT_UID = 65532
"""The conventional "nonroot" user of distroless images; used for pods running our own image."""


def pod_security_context(*, run_as_user: int | None = None) -> Obj:
    """The pod-level part: non-root and the runtime's default seccomp profile."""
    context: Obj = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if run_as_user is not None:
        context.update(runAsUser=run_as_user, runAsGroup=run_as_user, fsGroup=run_as_user)
    return context


def container_security_context(*, read_only_root: bool = True) -> Obj:
    """The container-level part: no escalation, no capabilities, read-only root by default."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
