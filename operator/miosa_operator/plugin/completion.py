"""``kubectl_complete-miosa``: shell completion through kubectl's plugin completion.

kubectl (1.26+) completes ``kubectl miosa …<TAB>`` by running the executable
``kubectl_complete-miosa`` found on ``$PATH`` with the words typed after ``miosa`` and the
word being completed last (empty for a new word).  It prints one candidate per line and,
last, ``:<directive>`` (cobra's ShellCompDirective: 4 = no file names, 0 = default).

Candidates come from the plugin's own argparse parser (commands, flags, ``--state`` and
``-o`` choices) and, for DEPLOYMENT and VERSION arguments, from the cluster: one LIST with a
short timeout, in the namespace and context given on the line.  Any failure completes
nothing rather than printing an error into the user's shell.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .client import Cluster
from .errors import PluginError
from .kubeconfig import contexts

NO_FILES = 4
DEFAULT = 0
TIMEOUT = 3.0
_VALUED_GLOBALS = ("--kubeconfig", "--context", "-n", "--namespace", "--request-timeout")
_OUTPUTS = ("json", "yaml", "name", "jsonpath=")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def candidates(parser: argparse.ArgumentParser, words: Sequence[str], partial: str) -> tuple[list[str], int]:
    """What may come next after ``words`` when the user typed ``partial``."""
    current, positional, expecting, globals_ = parser, 0, None, {}
    for word in words:
        if expecting is not None:
            globals_[expecting.dest] = word
            expecting = None
            continue
        flags = _flags(current)
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            action = flags.get(name)
            if action is not None and action.nargs != 0 and "=" not in word:
                expecting = action
            continue
        sub = _subcommands(current)
        if word in sub:
            current, positional = sub[word], 0
        else:
            positional += 1
    if expecting is not None:
        return _values(expecting, partial, globals_)
    if partial.startswith("-"):
        return sorted(o for o in _flags(current) if o.startswith(partial) and o not in ("-h",)), NO_FILES
    sub = _subcommands(current)
    if sub:
        return sorted(name for name in sub if name.startswith(partial)), NO_FILES
    slots = _positionals(current)
    if positional < len(slots):
        metavar = slots[positional].metavar
        return _objects(metavar if isinstance(metavar, str) else "", partial, globals_), NO_FILES
    return [], NO_FILES


def _values(action: argparse.Action, partial: str, given: dict[str, str]) -> tuple[list[str], int]:
    if action.dest == "kubeconfig":
        return [], DEFAULT  # file names: the shell's own completion
    if action.dest == "context":
        return [c for c in contexts(given.get("kubeconfig")) if c.startswith(partial)], NO_FILES
    if action.dest == "output":
        return [o for o in _OUTPUTS if o.startswith(partial)], NO_FILES
    if action.choices:
        return [str(c) for c in action.choices if str(c).startswith(partial)], NO_FILES
    return [], NO_FILES


def _objects(metavar: str, partial: str, given: dict[str, str]) -> list[str]:
    if metavar not in ("DEPLOYMENT", "VERSION"):
        return []
    try:
        cluster = Cluster.connect(given.get("kubeconfig"), given.get("context"), given.get("namespace"), TIMEOUT)
        items = cluster.list_deployments() if metavar == "DEPLOYMENT" else cluster.list_versions("")
    except PluginError:
        return []
    return sorted(name for name in (i["metadata"]["name"] for i in items) if name.startswith(partial))


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import build_parser

    args = list(sys.argv[1:] if argv is None else argv)
    words, partial = (args[:-1], args[-1]) if args else ([], "")
    try:
        found, directive = candidates(build_parser(), words, partial)
    except Exception:  # completion must never break the user's shell
        found, directive = [], NO_FILES
    for candidate in found:
        print(candidate)
    print(f":{directive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
