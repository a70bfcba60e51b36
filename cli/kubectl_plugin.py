"""`kubectl botsession` (issue 22): a kubectl plugin, installed with the package as the
executable `kubectl-botsession`, so `kubectl botsession ...` finds it on PATH.

    kubectl botsession status BOT [USER]
    kubectl botsession history BOT USER [--api URL]
    kubectl botsession clear BOT [USER] [--keep-redis] [--keep-database] [--keep-session] [--yes]
    kubectl botsession top
    kubectl botsession doctor [--redis URL]

It reads the BotSession objects with the project's own Kubernetes client; `clear` goes
through the REST API when given one (--api/--token or BOTSESSION_API_URL/BOTSESSION_TOKEN),
else deletes the BotSessions directly. Tables, or `-o json` (docs/kubectl-plugin.md). Exit
codes: 0 done (doctor: OK or WARN), 1 failed (doctor: FAIL), 2 bad usage. It never prints
a token or a phone number, and logs nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cli.kubectl import commands
from cli.kubectl.output import write_json
from cli.kubectl.sources import (
    CHUNK,
    Cluster,
    PluginError,
    RestApi,
    connection,
    namespace_of,
)
from sessions.adapters.kubernetes.client import ApiError, ApiUnavailable, KubeClient
from sessions.adapters.redis.store import DEFAULT_PREFIX

PROG = "kubectl botsession"


def _common() -> argparse.ArgumentParser:
    """The flags every command takes, before or after its name (kubectl's style). Their
    defaults are applied after parsing (argparse would let a command's defaults overwrite
    flags given before it)."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    common.add_argument("--context", help="the kubeconfig context to use")
    common.add_argument(
        "-n",
        "--namespace",
        help="the BotSessions' namespace (default: $BOTSESSION_NAMESPACE, else the context's)",
    )
    common.add_argument("-o", "--output", choices=["table", "json"], help="table (default) or json")
    common.add_argument(
        "--request-timeout", type=float, help="seconds per Kubernetes request (default 30)"
    )
    return common


def _api_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", metavar="URL", help="the REST API (default: $BOTSESSION_API_URL)")
    parser.add_argument(
        "--token",
        help="an API token (default: $BOTSESSION_TOKEN; prefer the variable: "
        "a flag shows in the process list)",
    )


def parser() -> argparse.ArgumentParser:
    common = _common()
    main = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Inspect and clear BotSessions (botsession-operator).",
    )
    sub = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = sub.add_parser("status", parents=[common], help="a bot's sessions, or one")
    status.add_argument("bot")
    status.add_argument("user", nargs="?")

    history = sub.add_parser("history", parents=[common], help="a session's transitions")
    history.add_argument("bot")
    history.add_argument("user")
    _api_flags(history)

    clear = sub.add_parser(
        "clear", parents=[common], help="clear a session, or every session of a bot"
    )
    clear.add_argument("bot")
    clear.add_argument("user", nargs="?")
    _api_flags(clear)
    clear.add_argument("--keep-redis", action="store_true", help="leave the Redis keys (API only)")
    clear.add_argument(
        "--keep-database", action="store_true", help="leave the database rows (API only)"
    )
    clear.add_argument(
        "--keep-session", action="store_true", help="leave the BotSession (API only)"
    )
    clear.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    clear.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for deleted BotSessions to go (direct clear; default 10)",
    )

    sub.add_parser("top", parents=[common], help="sessions by status per bot")

    doctor = sub.add_parser("doctor", parents=[common], help="the operator's health")
    doctor.add_argument(
        "--redis",
        metavar="URL",
        help="the operator's Redis, for the lease and the last sweep "
        "(default: $BOTSESSION_REDIS_URL)",
    )
    doctor.add_argument(
        "--redis-key-prefix",
        help=f"the installation's key prefix (default: $BOTSESSION_REDIS_KEY_PREFIX, else "
        f"{DEFAULT_PREFIX})",
    )
    doctor.add_argument(
        "--stuck-after",
        type=float,
        default=60.0,
        help="seconds a deletion may wait for the finalizer (default 60)",
    )
    doctor.add_argument(
        "--sync-grace",
        type=float,
        default=60.0,
        help="seconds a change may wait for its sync (default 60)",
    )
    doctor.add_argument(
        "--sweep-stale-after",
        type=float,
        default=3 * 3600.0,
        help="seconds after which the last sweep is stale (default 10800, the alert's 3h)",
    )
    for each in sub.choices.values():
        each.add_argument("--chunk-size", type=int, default=CHUNK, help=argparse.SUPPRESS)
    return main


def _confirm(prompt: str) -> bool:
    print(f"{prompt} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


class Lazy:
    """The cluster connection, opened on first use (clear and history through the API do
    not need one)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.opened: Cluster | None = None

    def __call__(self) -> Cluster:
        if self.opened is None:
            found = connection(self.args.kubeconfig, self.args.context)
            client = KubeClient(found, timeout=self.args.request_timeout, max_connections=4)
            self.opened = Cluster(
                client, namespace_of(self.args.namespace, found), self.args.chunk_size
            )
        return self.opened

    async def close(self) -> None:
        if self.opened is not None:
            await self.opened.close()


def _api(args: argparse.Namespace) -> RestApi | None:
    url = getattr(args, "api", None) or os.environ.get("BOTSESSION_API_URL")
    if not url:
        return None
    token = getattr(args, "token", None) or os.environ.get("BOTSESSION_TOKEN")
    if not token:
        raise PluginError("the API needs a token: --token or BOTSESSION_TOKEN")
    return RestApi(url, token)


async def _run(args: argparse.Namespace, confirm: Callable[[str], bool]) -> commands.Result:
    cluster = Lazy(args)
    now = datetime.now(UTC)
    try:
        if args.command == "status":
            return await commands.status(cluster(), args.bot, args.user, now)
        if args.command == "history":
            return await commands.history(cluster, _api(args), args.bot, args.user, now)
        if args.command == "top":
            return await commands.top(cluster(), now)
        if args.command == "doctor":
            limits = commands.Limits(
                stuck_after=timedelta(seconds=args.stuck_after),
                sync_grace=timedelta(seconds=args.sync_grace),
                sweep_stale_after=timedelta(seconds=args.sweep_stale_after),
            )
            redis_url = args.redis or os.environ.get("BOTSESSION_REDIS_URL")
            prefix = args.redis_key_prefix or os.environ.get(
                "BOTSESSION_REDIS_KEY_PREFIX", DEFAULT_PREFIX
            )
            return await commands.doctor(cluster(), redis_url, prefix, limits, now)
        flags = commands.ClearFlags(args.keep_redis, args.keep_database, args.keep_session)
        api = _api(args)
        if api is not None:
            everything = args.user is None and not args.yes
            if everything and not confirm(
                f"Clear every session of bot {args.bot!r} through the API?"
            ):
                raise PluginError("not confirmed: nothing cleared")
            return commands.clear_through_api(api, args.bot, args.user, flags)
        return await commands.clear_directly(
            cluster(),
            args.bot,
            args.user,
            flags,
            timedelta(seconds=max(0.0, args.wait)),
            (lambda _prompt: True) if args.yes else confirm,
        )
    finally:
        await cluster.close()


_DEFAULTS: dict[str, Any] = {
    "kubeconfig": None,
    "context": None,
    "namespace": None,
    "output": "table",
    "request_timeout": 30.0,
    "api": None,
    "token": None,
    "redis": None,
    "redis_key_prefix": None,
}


def main(argv: Sequence[str] | None = None, confirm: Callable[[str], bool] = _confirm) -> int:
    args = parser().parse_args(argv)
    for name, value in _DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    try:
        result = asyncio.run(_run(args, confirm))
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiUnavailable as exc:
        print(f"error: the Kubernetes API server cannot be reached: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"error: the Kubernetes API server refused: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.output == "json":
        write_json(result.document, sys.stdout)
    else:
        if result.text:
            print(result.text)
        if result.note and (not result.text or result.note not in result.text):
            print(result.note, file=sys.stderr)
    sys.stdout.flush()
    return result.code


if __name__ == "__main__":
    sys.exit(main())
