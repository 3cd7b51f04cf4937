"""Log lines that say which object they are about, as text or JSON, and never a secret.

``configure`` sets up kopf's logging (``kopf.configure``: its own JSON formatter, built on
python-json-logger, with the object reference under ``object``) and adds two filters to the
handler that writes the lines:

* ``ObjectFields``: a line logged while a handler works on an object gets that object's
  reference (``context``), so lines of the controllers and of libraries carry it too, not
  only kopf's per-object logger; and a DeploymentVersion's id (``ver_…``), or for a
  Deployment the id of the version it is rolling out or running, is added as
  ``version_id`` (looked up in the census: ids are in status, names in references).
* ``Redact``: the store's secret key and session token are replaced by ``[redacted]`` in
  every message and traceback, whatever logged them.  Nothing the operator writes on
  purpose contains them; this is the net under that.

In JSON every line is one object: ``timestamp``, ``severity``, ``logger``, ``message`` and,
when about an object, ``namespace``, ``name``, ``kind``, ``version_id`` and kopf's ``object``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..api import meta
from ..api.types import Obj
from . import context
from .census import VersionCensus

LOG_FORMATS = ("text", "json")
REDACTED = "[redacted]"


class ObjectFields(logging.Filter):
    def __init__(self, census: VersionCensus | None = None) -> None:
        super().__init__()
        self.census = census

    def filter(self, record: logging.LogRecord) -> bool:
        ref = getattr(record, "k8s_ref", None)
        current = context.current()
        if ref is None and current is not None:
            ref = {"kind": current.kind, "namespace": current.namespace, "name": current.name, "uid": current.uid}
            record.k8s_ref = ref
        if ref and not getattr(record, "version_id", None):
            version_id = self._version_id(ref, current)
            if version_id:
                record.version_id = version_id
        return True

    def _version_id(self, ref: Obj, current: context.Reconciling | None) -> str | None:
        namespace, name = ref.get("namespace") or "", ref.get("name") or ""
        same = current is not None and (current.namespace, current.name, current.kind) == (namespace, name, ref.get("kind"))
        if same and current is not None and current.kind == meta.VERSION_KIND and current.id:
            return current.id
        if self.census is None:
            return None
        if ref.get("kind") == meta.VERSION_KIND:
            return self.census.version_id(namespace, name)
        version = current.version if same and current is not None else None
        return self.census.version_id(namespace, version) if version else None


class Redact(logging.Filter):
    """Replaces secret values in the message and traceback of every record."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        # Short values would redact innocent text; real keys are long.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # Formatters render exc_info afresh when it is set; the cleaned text must win.
            record.exc_text, record.exc_info = self._clean(record.exc_text), None
        return True

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


def json_formatter() -> logging.Formatter:
    from kopf._core.actions.loggers import ObjectJsonFormatter  # kopf's own JSON lines

    class Formatter(ObjectJsonFormatter):
        def add_fields(self, log_record: dict[str, object], record: logging.LogRecord, message_dict: dict[str, object]) -> None:
            super().add_fields(log_record, record, message_dict)
            log_record["logger"] = record.name
            ref = getattr(record, "k8s_ref", None) or {}
            for key in ("namespace", "name", "kind"):
                if ref.get(key):
                    log_record[key] = ref[key]

    return Formatter()


def configure(
    log_format: str, *, verbose: bool = False, census: VersionCensus | None = None, secrets: Iterable[str | None] = ()
) -> None:
    """kopf's logging in ``log_format`` (``text`` or ``json``), with the filters above."""
    import kopf

    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.FULL, log_prefix=True)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.StreamHandler):
            continue
        if log_format == "json":
            handler.setFormatter(json_formatter())
        handler.addFilter(ObjectFields(census))
        handler.addFilter(Redact(secrets))
