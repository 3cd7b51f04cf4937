"""The environment file hack/env.sh writes (``export NAME=value`` lines): read once, here,
for the e2e suite (tests/e2e/conftest.py) and the benchmarks (benchmarks/env.py)."""

from __future__ import annotations

import re
from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of ``path``, but ``PATH`` (the caller's own stays in force)."""
    values = {}
    for line in path.read_text().splitlines():
        match = re.match(r"export (\w+)=(.*)$", line)
        if match and match.group(1) != "PATH":
            values[match.group(1)] = match.group(2)
    return values
