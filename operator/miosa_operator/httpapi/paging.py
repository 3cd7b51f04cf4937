"""Newest-first pages of a Deployment's versions, with an opaque cursor over version numbers.

The API server pages (``continue``) in name order, and sorting would need every version of
the Deployment on every page.  Version numbers are gapless per Deployment and mirrored into
the label ``deploy.miosa.io/version-number``, and label selectors accept ``>`` and ``<`` on
integer values, so a page is a few LISTs of *windows* of numbers, newest window first:

* the first window is ``[top - limit, top)`` where ``top`` is one above the Deployment's
  highest number (``status.lastVersionNumber``), or the cursor's number;
* without filters a window of ``limit`` numbers holds ``limit`` versions (numbers are
  gapless), so a page is one LIST of exactly the objects it returns;
* with filters (end-customer ids, state) a window may hold fewer: the next window is
  below it and 4x as wide, so a sparse filter over 10,000 versions takes at most
  ``log4(10,000 / limit) + 1`` LISTs, each returning only matching objects;
* the cursor is the number below which the next page starts (``base64url("v1:<n>")``),
  so pages never overlap or skip, whatever is published meanwhile: new versions get
  numbers above the first page's window.

Versions appear once numbered (the operator numbers a version within moments of its
creation once its Deployment exists).  Everything here is pure: the service layer runs the
LISTs the planner asks for.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..api import meta
from ..api.types import Obj

GROWTH = 4
_PREFIX = "v1:"
MAX_CURSOR_LENGTH = 64


class BadCursor(ValueError):
    pass


def encode_cursor(before: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{before}".encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> int:
    """The number the next page starts below; ``BadCursor`` for anything we did not issue."""
    if not raw or len(raw) > MAX_CURSOR_LENGTH:
        raise BadCursor("cursor is empty or too long")
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor("cursor is not one this API issued") from exc
    if not text.startswith(_PREFIX) or not text[len(_PREFIX) :].isdigit():
        raise BadCursor("cursor is not one this API issued")
    before = int(text[len(_PREFIX) :])
    if not 2 <= before <= 10**12:
        raise BadCursor("cursor is out of range")
    return before


def window_selector(base: str, low: int, high: int) -> str:
    """``base`` plus the numbers ``low <= n < high``."""
    return f"{base},{meta.LABEL_VERSION_NUMBER}>{low - 1},{meta.LABEL_VERSION_NUMBER}<{high}"


def number_of(body: Obj) -> int | None:
    number = (body.get("status") or {}).get("versionNumber")
    return number if isinstance(number, int) else None


@dataclass
class PagePlanner:
    """Asks for windows until it has a page; ``window()`` is None when it is done."""

    top: int  # exclusive: numbers below it
    limit: int
    found: list[Obj] = field(default_factory=list)
    _high: int = 0
    _width: int = 0
    _done: bool = False

    def __post_init__(self) -> None:
        self._high = self.top
        self._width = self.limit
        self._done = self.top <= 1

    def window(self) -> tuple[int, int] | None:
        if self._done:
            return None
        return max(1, self._high - self._width), self._high

    def add(self, items: Iterable[Obj]) -> None:
        """The objects the last window's LIST returned (already filtered by the caller)."""
        low, high = self.window() or (1, 1)
        self.found += [item for item in items if (n := number_of(item)) is not None and low <= n < high]
        self._high, self._width = low, self._width * GROWTH
        if len(self.found) >= self.limit or low <= 1:
            self._done = True

    def page(self) -> tuple[list[Obj], int | None]:
        """The page, newest first, and the number the next page starts below (None: last page)."""
        ordered = sorted(self.found, key=lambda item: number_of(item) or 0, reverse=True)
        page = ordered[: self.limit]
        more = len(ordered) > self.limit or (len(page) == self.limit and self._high > 1)
        return page, (number_of(page[-1]) if more and page else None)
