"""Attribution mirrored into labels, so per-customer history is a label selector.

Label values are at most 63 characters of ``[A-Za-z0-9._-]``, starting and ending with an
alphanumeric.  External ids are whatever the customer's platform uses (emails, paths,
UUIDs with braces…), so an id that is not a valid label value is stored as ``h-`` and a
sha256 prefix.  The function is deterministic and shared with the kubectl plugin, which
hashes a ``--workspace`` argument the same way before selecting; the real id stays in spec.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from ..api import meta

if TYPE_CHECKING:  # the kubectl plugin imports label_value without pydantic
    from ..api.models import DeploymentVersionSpec

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_HASH_PREFIX = "h-"


def label_value(raw: str) -> str:
    """``raw`` itself when it is a valid label value, else a stable hashed stand-in."""
    if len(raw) <= 63 and _LABEL_VALUE.match(raw) and not raw.startswith(_HASH_PREFIX):
        return raw
    return _HASH_PREFIX + hashlib.sha256(raw.encode()).hexdigest()[:40]


def version_labels(spec: DeploymentVersionSpec) -> dict[str, str]:
    """Labels a DeploymentVersion must carry, derived from its frozen spec."""
    labels = {meta.LABEL_DEPLOYMENT: label_value(spec.deployment_ref.name), meta.LABEL_KIND: spec.kind.value}
    attribution = spec.attribution
    if attribution is None:
        return labels
    for key, raw in (
        (meta.LABEL_CREATED_BY, attribution.created_by),
        (meta.LABEL_WORKSPACE, attribution.external_workspace_id),
        (meta.LABEL_USER, attribution.external_user_id),
        (meta.LABEL_PROJECT, attribution.external_project_id),
    ):
        if raw:
            labels[key] = label_value(raw)
    return labels
