"""``python -m miosa_operator.plugin`` (and the zipapp): the plugin, or its completion when
called as ``kubectl_complete-miosa``."""

from __future__ import annotations

import os
import sys


def run() -> int:
    if os.path.basename(sys.argv[0]).startswith("kubectl_complete-"):
        from .completion import main as complete

        return complete()
    from .cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
