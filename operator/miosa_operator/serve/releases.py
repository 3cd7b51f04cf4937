"""Where a release lives at the artifact endpoint; shared by the endpoint and its clients.

``GET /v1/releases/<namespace>/<dep id>/<ver id>`` is the canonical
``<releases>/<namespace>/<dep id>/<ver id>/dist.tar.zst`` of that version.  Every part is
checked against its format (a DNS label, ``dep_``/``ver_`` + ULID), so a request can never
name another object of the store.
"""

from __future__ import annotations

import re

RELEASE_OBJECT = "dist.tar.zst"
RELEASES_PATH = "/v1/releases/"
DEFAULT_AUDIENCE = "miosa-artifacts"

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
_DEPLOYMENT_ID = re.compile(rf"^dep_{_ULID}$")
_VERSION_ID = re.compile(rf"^ver_{_ULID}$")


def release_path(namespace: str, deployment_id: str, version_id: str) -> str:
    """The endpoint path of a release (what the fetch init container asks for)."""
    return f"{RELEASES_PATH}{namespace}/{deployment_id}/{version_id}"


def parse_release(release: str) -> tuple[str, str, str] | None:
    """``(namespace, dep id, ver id)`` of a well-formed ``<namespace>/<dep id>/<ver id>``, else None."""
    parts = release.split("/")
    if len(parts) != 3:
        return None
    namespace, deployment_id, version_id = parts
    if _NAMESPACE.match(namespace) and _DEPLOYMENT_ID.match(deployment_id) and _VERSION_ID.match(version_id):
        return namespace, deployment_id, version_id
    return None


def parse_release_path(path: str) -> tuple[str, str, str] | None:
    """``(namespace, dep id, ver id)`` of a well-formed endpoint path, else None."""
    if not path.startswith(RELEASES_PATH):
        return None
    return parse_release(path[len(RELEASES_PATH) :])
