"""Which store locations a tenant may name as a source: one normal form, one prefix rule.

A version's ``spec.artifact.uri`` and ``spec.buildLog.uri`` are written by the tenant, but
the operator reads them with its own credentials, which reach every tenant's uploads (and
its own releases). Without a rule, tenant A could point a version at tenant B's upload and
get it verified, served and its existence or digest reported (a confused deputy).

Design decisions:

* **Normalise, then compare, then read what was compared.** ``normalise`` turns every
  spelling into one form — scheme case, ``file://localhost/``, ``file:////``, percent-escapes
  (decoded once), empty and ``.`` segments, ``..`` (resolved; never above the bucket or the
  root) — and the store then reads exactly the normalised URI. A refusal of the raw string
  (``file:////…``, ``/./``, ``//``) can therefore never pass a check that the read ignores.
* **Segment-wise prefixes.** ``s3://uploads/team`` contains ``s3://uploads/team/x`` but not
  ``s3://uploads/team-b/x``.
* **Confined by default.** A tenant (namespace ``ns``) may name only objects under
  ``<uploads>/<ns>/``; ``MIOSA_SOURCE_PREFIXES`` adds prefixes (``{namespace}`` is replaced
  by the version's namespace; ``s3://`` or ``file:///`` alone allow everything of that
  scheme). The releases location is never a source, whatever the prefixes say.
* **Decided before any read.** ``SourcePolicy.check`` needs no store call, so a refusal
  says nothing about whether the object exists: no existence oracle across tenants.
* ``file://`` sources are also compared after resolving symlinks, so a link inside a
  tenant's directory cannot lead into another's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from .base import FILE_SCHEME, S3_SCHEME

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class SourceNotAllowed(ValueError):
    """The URI is malformed or outside every prefix the tenant may use."""


@dataclass(frozen=True)
class Location:
    """A normalised store URI: scheme, bucket (S3; ``None`` = any, for a prefix) and segments."""

    scheme: str
    bucket: str | None
    segments: tuple[str, ...]

    @property
    def uri(self) -> str:
        path = "/".join(self.segments)
        if self.scheme == FILE_SCHEME:
            return f"file:///{path}"
        return f"s3://{self.bucket}/{path}" if self.bucket is not None else "s3://"

    @property
    def prefix_uri(self) -> str:
        """As a prefix is written: with its trailing ``/``."""
        return self.uri if self.uri.endswith("/") else self.uri + "/"

    def contains(self, other: Location) -> bool:
        """``other`` is strictly inside this prefix (segment-wise)."""
        if other.scheme != self.scheme:
            return False
        if self.bucket is not None and other.bucket != self.bucket:
            return False
        depth = len(self.segments)
        return len(other.segments) > depth and other.segments[:depth] == self.segments


def normalise(uri: str, *, prefix: bool = False) -> Location:
    """The one normal form of ``uri``; ``SourceNotAllowed`` when it has none.

    A source must name an object (no trailing ``/``); a ``prefix`` may name a bucket or
    directory, or be a bare ``s3://`` / ``file:///``.
    """
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in (FILE_SCHEME, S3_SCHEME):
        raise SourceNotAllowed(f"not an s3:// or file:/// URI: {uri!r}")
    decoded = _decode(rest, uri)
    if scheme == FILE_SCHEME:
        if decoded.startswith("localhost/"):
            decoded = decoded[len("localhost") :]
        if not decoded.startswith("/"):
            raise SourceNotAllowed(f"file URIs need an absolute path (file:///path): {uri!r}")
        bucket, path = None, decoded
    else:
        if not decoded and prefix:
            return Location(S3_SCHEME, None, ())
        bucket, _, path = decoded.partition("/")
        if not _BUCKET.match(bucket):
            raise SourceNotAllowed(f"not a valid S3 bucket name in {uri!r}")
    segments = _resolve(path, uri)
    if not prefix and (not segments or path.endswith("/")):
        raise SourceNotAllowed(f"{uri!r} does not name an object")
    return Location(scheme, bucket, segments)


def _decode(text: str, uri: str) -> str:
    if "%" in _ESCAPE.sub("", text):
        raise SourceNotAllowed(f"invalid percent-escape in {uri!r}")
    try:
        decoded = unquote(text, errors="strict")  # escaped UTF-8 bytes; other characters kept
    except UnicodeDecodeError:
        raise SourceNotAllowed(f"percent-escapes that are not UTF-8 in {uri!r}") from None
    if _CONTROL.search(decoded):
        raise SourceNotAllowed(f"control characters in {uri!r}")
    return decoded


def _resolve(path: str, uri: str) -> tuple[str, ...]:
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise SourceNotAllowed(f"{uri!r} climbs above its root")
            segments.pop()
        else:
            segments.append(segment)
    return tuple(segments)


class SourcePolicy:
    """Where a namespace's versions may read bundles and build logs from."""

    def __init__(
        self,
        uploads_uri: str,
        extra_prefixes: Iterable[str],
        releases_uri: str,
        realpath: Callable[[str], str] = os.path.realpath,
    ) -> None:
        self._uploads = uploads_uri.rstrip("/")
        self._extra = tuple(extra_prefixes)
        self._releases = normalise(releases_uri, prefix=True)
        self._realpath = realpath
        for template in self._templates():  # fail at startup, not on the first version
            normalise(template.format(namespace="namespace"), prefix=True)

    def _templates(self) -> tuple[str, ...]:
        return (f"{self._uploads}/{{namespace}}/", *self._extra)

    def prefixes(self, namespace: str) -> list[Location]:
        return [normalise(template.format(namespace=namespace), prefix=True) for template in self._templates()]

    def check(self, uri: str, namespace: str) -> str:
        """The normalised URI to read, or ``SourceNotAllowed`` (no store call either way)."""
        location = normalise(uri)
        allowed = self.prefixes(namespace)
        where = allowed[0].prefix_uri
        refusal = f"{location.uri} is outside this namespace's allowed sources (by default {where})"
        if self._releases.contains(location) or not any(prefix.contains(location) for prefix in allowed):
            raise SourceNotAllowed(refusal)
        if location.scheme == FILE_SCHEME and not self._still_inside_after_links(location, allowed):
            raise SourceNotAllowed(refusal)
        return location.uri

    def _still_inside_after_links(self, location: Location, allowed: list[Location]) -> bool:
        real = self._real(location)
        if self._real(self._releases).contains(real):
            return False
        return any(self._real(prefix).contains(real) for prefix in allowed if prefix.scheme == FILE_SCHEME)

    def _real(self, location: Location) -> Location:
        if location.scheme != FILE_SCHEME:
            return location
        resolved = self._realpath("/" + "/".join(location.segments))
        return Location(FILE_SCHEME, None, tuple(part for part in resolved.split("/") if part))
