"""`botsession`: one entry point for the operator, the API and the local stack."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

from api import main as api_main
from controller import main as controller_main
from devstack.postgres_server import PostgresServer
from devstack.process import DevstackError
from devstack.redis_server import RedisServer

T = TypeVar("T")


def _serve_until_stopped(servers: AbstractContextManager[T], announce: Callable[[T], None]) -> int:
    """Start, announce, wait for Ctrl-C (or SIGTERM), stop everything. A second Ctrl-C
    must not cut the clean-up short and leave servers running: both signals only note the
    request (no KeyboardInterrupt, which a second Ctrl-C could raise mid clean-up)."""
    requests: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: requests.append(number))
    try:
        with servers as started:
            announce(started)
            while not requests:
                time.sleep(0.2)
            print("stopping...", flush=True)
    except DevstackError as exc:
        print(f"botsession: {exc}", file=sys.stderr)
        return 1
    return 0


def _services(args: argparse.Namespace) -> int:
    """Start private Redis and PostgreSQL servers and wait for Ctrl-C."""

    def announce(servers: tuple[RedisServer, PostgresServer]) -> None:
        print(f"redis:      {servers[0].url}")
        print(f"postgresql: {servers[1].dsn}")
        print("Ctrl-C stops both and removes their data.", flush=True)

    return _serve_until_stopped(_Both(RedisServer(), PostgresServer()), announce)


class _Both(contextlib.ExitStack):
    def __init__(self, redis: RedisServer, postgres: PostgresServer) -> None:
        super().__init__()
        self.servers = (redis, postgres)

    def __enter__(self) -> tuple[RedisServer, PostgresServer]:  # type: ignore[override]
        super().__enter__()
        try:
            return (self.enter_context(self.servers[0]), self.enter_context(self.servers[1]))
        except BaseException:
            self.close()
            raise


def _up(args: argparse.Namespace) -> int:
    """The whole stack locally until Ctrl-C: control plane (or --use-current-cluster),
    Redis, SQLite, the CRDs, the operator and the API."""
    from devstack.stack import LocalStack

    kubeconfig = None
    if args.use_current_cluster:
        kubeconfig = Path(os.environ.get("KUBECONFIG") or "~/.kube/config").expanduser()

    def announce(stack: LocalStack) -> None:
        if args.demo:
            stack.demo()
        print(stack.banner(), flush=True)

    return _serve_until_stopped(
        LocalStack(kubeconfig=kubeconfig, namespace=args.namespace, api_port=args.port), announce
    )


def _crd(args: argparse.Namespace) -> int:
    """Print the BotSession CRD (generated from the transition table)."""
    from sessions.adapters.kubernetes.crd import render

    sys.stdout.write(render())
    return 0


def _controlplane(args: argparse.Namespace) -> int:
    """Run etcd + kube-apiserver, write a kubeconfig, apply the CRD, wait for Ctrl-C."""
    from devstack.controlplane import ControlPlane
    from devstack.kubectl import kubectl
    from sessions.adapters.kubernetes.crd import render

    def announce(plane: ControlPlane) -> None:
        crd = plane.workdir / "botsessions.yaml"
        crd.write_text(render())
        kubectl(plane.kubeconfig, "apply", "-f", str(crd))
        print(f"kube-apiserver: {plane.url}")
        print(f"export KUBECONFIG={plane.kubeconfig}")
        print("kubectl get botsessions   # Ctrl-C stops the control plane", flush=True)

    return _serve_until_stopped(ControlPlane(), announce)


def _cluster(args: argparse.Namespace) -> int:
    """A real single-node cluster with Redis, PostgreSQL and the chart installed from the
    locally built image; prints how to reach the API and kubectl, waits for Ctrl-C."""
    from devstack.cluster.stack import ClusterStack

    def announce(stack: ClusterStack) -> None:
        print(stack.banner(), flush=True)

    stack = ClusterStack(
        namespace=args.namespace,
        api_mode=args.api_mode,
        port=args.port,
        extra_values=tuple(args.set or ()),
    )
    return _serve_until_stopped(stack, announce)


def _fingerprint(args: argparse.Namespace) -> int:
    """The fingerprint log lines carry for a userId (BOTSESSION_FINGERPRINT_KEY must be the
    installation's key), to find one user's lines."""
    from sessions.domain import privacy
    from sessions.domain.settings import load_settings

    key = load_settings().fingerprint_key
    if key is None:
        print("botsession fingerprint: set BOTSESSION_FINGERPRINT_KEY", file=sys.stderr)
        return 2
    privacy.configure(key.get_secret_value())
    for user_id in args.user_id:
        print(privacy.user_fingerprint(user_id))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    """Migrate the database (BOTSESSION_DATABASE_URL, or --database-url) to the newest schema."""
    import asyncio

    from sessions.adapters.sql.migrate import upgrade
    from sessions.adapters.sql.store import create_engine
    from sessions.domain.settings import SettingsError, load_settings

    try:
        settings = load_settings(
            **({"database_url": args.database_url} if args.database_url else {})
        )
    except SettingsError as exc:
        print(f"botsession: {exc}", file=sys.stderr)
        return 2

    async def run() -> tuple[str | None, str | None]:
        engine = create_engine(settings.database_url)
        try:
            return await upgrade(engine)
        finally:
            await engine.dispose()

    before, after = asyncio.run(run())
    print(f"schema: {before or 'empty'} -> {after}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="botsession", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="the whole stack locally, until Ctrl-C")
    up.add_argument("--demo", action="store_true", help="create sessions in every phase")
    up.add_argument(
        "--use-current-cluster",
        action="store_true",
        help="use $KUBECONFIG's cluster instead of a local control plane",
    )
    up.add_argument("--namespace", default="default")
    up.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    up.set_defaults(func=_up)
    services = commands.add_parser("services", help="run private Redis and PostgreSQL servers")
    services.set_defaults(func=_services)
    api = commands.add_parser("api", help="run the REST API (uvicorn)")
    api_main.add_arguments(api)
    api.set_defaults(func=api_main.run)
    operator = commands.add_parser("operator", help="run the operator (kopf controller)")
    controller_main.add_arguments(operator)
    operator.set_defaults(func=controller_main.run)
    migrate = commands.add_parser("migrate", help="migrate the database schema")
    migrate.add_argument("--database-url", help="default: $BOTSESSION_DATABASE_URL")
    migrate.set_defaults(func=_migrate)
    crd = commands.add_parser("crd", help="print the BotSession CRD")
    crd.set_defaults(func=_crd)
    plane = commands.add_parser("controlplane", help="local etcd + kube-apiserver")
    plane.add_argument("action", choices=["up"], help="start it and wait for Ctrl-C")
    plane.set_defaults(func=_controlplane)
    fingerprint = commands.add_parser(
        "fingerprint", help="the fingerprint the logs carry for a userId (never the userId)"
    )
    fingerprint.add_argument("user_id", nargs="+", help="one or more userIds")
    fingerprint.set_defaults(func=_fingerprint)
    cluster = commands.add_parser(
        "cluster", help="a real local cluster with the chart installed (the stand-in for kind)"
    )
    cluster.add_argument("action", choices=["up"], help="start it and wait for Ctrl-C")
    cluster.add_argument("--namespace", default="bots", help="where the chart goes")
    cluster.add_argument(
        "--api-mode",
        choices=["sidecar", "deployment"],
        default="sidecar",
        help="the chart's api.mode (deployment: with the PostgreSQL Pod)",
    )
    cluster.add_argument("--port", type=int, default=8000, help="local port for the API")
    cluster.add_argument("--set", action="append", help="more chart values, key=value")
    cluster.set_defaults(func=_cluster)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
