"""``kubectl miosa``: argument parsing, dispatch and exit codes.

kubectl finds any executable named ``kubectl-miosa`` on ``$PATH`` and runs it for
``kubectl miosa ...`` (the console script of this package).

Decisions:

* The global flags (``--kubeconfig``, ``--context``, ``-n``, ``--request-timeout``) are
  accepted before or after the command, as with kubectl (``kubectl miosa history site -n
  acme``): every subparser repeats them with ``SUPPRESS`` defaults so that a flag given
  on the left is not reset by the subparser.
* Exit codes are documented in ``errors.ExitCode``; argparse's own usage errors exit 2.
* Every command has a one-line description and an example in ``--help``, and ``-o``
  (json, yaml, name, jsonpath=…) besides its human output.
* The parser is also the source of shell completion (``completion``): commands, flags and
  their choices are read from it, so completion cannot drift from the commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import commands, publish
from .client import Cluster
from .errors import PluginError
from .output import FORMATS, parse_format
from .selection import STATES

PROG = "kubectl miosa"


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return number


def _global_flags(nested: bool) -> argparse.ArgumentParser:
    """The cluster flags; ``nested`` copies leave the attribute alone when not given."""
    flags = argparse.ArgumentParser(add_help=False)
    unset = argparse.SUPPRESS if nested else None
    group = flags.add_argument_group("cluster options")
    group.add_argument(
        "--kubeconfig", default=unset, metavar="FILE", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    group.add_argument("--context", default=unset, help="kubeconfig context (default: the current context)")
    group.add_argument(
        "-n", "--namespace", default=unset, help="namespace (tenant); default: the context's namespace, else 'default'"
    )
    group.add_argument(
        "--request-timeout",
        type=_positive,
        default=argparse.SUPPRESS if nested else 30.0,
        metavar="SECONDS",
        help="timeout of each API request (default: 30)",
    )
    return flags


class _Commands:
    """Adds leaf commands with the shared flags, a description and an example."""

    def __init__(self, subparsers: Any) -> None:
        self.subparsers = subparsers

    def add(self, name: str, summary: str, example: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        parser = self.subparsers.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example:\n  {example}",
            parents=[_global_flags(nested=True)],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(func=func)
        return parser


def _format(value: str) -> Any:
    try:
        return parse_format(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _output(parser: argparse.ArgumentParser, human: str = "table") -> None:
    parser.add_argument(
        "-o", "--output", type=_format, default=parse_format(""), metavar="FORMAT",
        help=f"{', '.join(FORMATS)} (default: {human})",
    )  # fmt: skip


def _wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", help="why; recorded in the Deployment's status.history")
    parser.add_argument("--wait", action="store_true", help="wait until the version is live (rollout complete)")
    parser.add_argument(
        "--timeout", type=_positive, default=300.0, metavar="SECONDS", help="how long --wait waits (default: 300)"
    )
    _output(parser, "a message")


def _add_versions(top: Any) -> None:
    versions = top.add_parser(
        "versions",
        help="list or show DeploymentVersions",
        description="List or show DeploymentVersions (the seed's Version records).",
        epilog=f"example:\n  {PROG} versions list site --workspace acme-team-123",
        parents=[_global_flags(nested=True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    leaves = _Commands(versions.add_subparsers(dest="versions_command", required=True, metavar="{list,show}"))
    listing = leaves.add(
        "list",
        "List the versions of a Deployment, newest first, optionally filtered by attribution or state.",
        f"{PROG} versions list site --workspace acme-team-123 -o json",
        commands.versions_list,
    )
    listing.add_argument("deployment", metavar="DEPLOYMENT")
    listing.add_argument("--workspace", help="only versions of this externalWorkspaceId")
    listing.add_argument("--user", help="only versions of this externalUserId")
    listing.add_argument("--project", help="only versions of this externalProjectId")
    listing.add_argument("--state", choices=STATES, help="only versions in this state")
    _output(listing)
    show = leaves.add(
        "show", "Show one version in the seed's Version shape.", f"{PROG} versions show site-v3 -o json", commands.versions_show
    )
    show.add_argument("version", metavar="VERSION")
    _output(show, "fields")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deployment versions of the MIOSA operator: list, promote, roll back, history, build logs.",
        epilog=f"example:\n  {PROG} -n acme versions list site\n\n"
        "exit codes: 0 ok, 1 refused, invalid, failed or reverted, 2 usage, 3 not found, 4 forbidden, "
        "5 cluster unreachable, 6 still in progress",
        parents=[_global_flags(nested=False)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_versions(top)
    leaves = _Commands(top)
    history = leaves.add(
        "history", "Show a Deployment's promotion history, newest first.", f"{PROG} history site", commands.history
    )
    history.add_argument("deployment", metavar="DEPLOYMENT")
    _output(history)
    status = leaves.add(
        "status",
        "Show whether DEPLOYMENT runs what it asks for: exit 0 live and healthy, 1 failed or reverted, 6 in progress.",
        f"{PROG} status site --watch --timeout 600",
        commands.status,
    )
    status.add_argument("deployment", metavar="DEPLOYMENT")
    status.add_argument("-w", "--watch", action="store_true", help="stream changes until healthy (exit 0) or failed (exit 1)")
    status.add_argument(
        "--timeout", type=_positive, default=600.0, metavar="SECONDS", help="how long --watch watches (default: 600)"
    )
    _output(status, "a summary")
    promote = leaves.add(
        "promote",
        "Make VERSION the live version of DEPLOYMENT (sets spec.promotedVersion).",
        f'{PROG} promote site site-v3 --reason "spring campaign" --wait',
        commands.promote,
    )
    promote.add_argument("deployment", metavar="DEPLOYMENT")
    promote.add_argument("version", metavar="VERSION")
    _wait_flags(promote)
    rollback = leaves.add(
        "rollback",
        "Roll DEPLOYMENT back to the previous live version, or to --to VERSION.",
        f'{PROG} rollback site --reason "v3 broke the contact form" --wait',
        commands.rollback,
    )
    rollback.add_argument("deployment", metavar="DEPLOYMENT")
    rollback.add_argument("--to", metavar="VERSION", help="target version (default: the previous live version)")
    _wait_flags(rollback)
    retry = leaves.add(
        "retry",
        "Retry the rollout of VERSION after it failed and was reverted (annotates the Deployment; spec is untouched).",
        f'{PROG} retry site-v3 --reason "quota raised" --wait',
        commands.retry,
    )
    retry.add_argument("version", metavar="VERSION")
    _wait_flags(retry)
    logs = leaves.add(
        "logs", "Print the build log of a version (and the external build's, if spec.buildLog names one).",
        f"{PROG} logs site-v3", commands.logs,
    )  # fmt: skip
    logs.add_argument("version", metavar="VERSION")
    _output(logs, "the log")
    publish.add_parser(leaves, PROG)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit 2 here
    try:
        cluster = Cluster.connect(args.kubeconfig, args.context, args.namespace, args.request_timeout)
        return args.func(cluster, args)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return int(error.code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `kubectl miosa versions list site | head`: the reader left; not our failure.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
