"""The two type aliases every layer shares (defined once, here at the bottom)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

Obj = dict[str, Any]
"""A Kubernetes object or any JSON object, as the API server sends and takes it."""

Clock = Callable[[], datetime]
"""Now, as an aware UTC datetime; injected so tests can move time."""
