"""Run the operator: `botsession operator` or `python -m controller`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import kopf

from controller.handlers import registry
from sessions import logs
from sessions.kube import load_config
from sessions.settings import SettingsError, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        help="namespace to watch (default: BOTSESSION_NAMESPACE "
        "or the kubeconfig's / pod's namespace)",
    )
    parser.add_argument(
        "--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument(
        "--peering",
        default=None,
        help="kopf peering name for an active/standby pair (default: standalone)",
    )
    parser.add_argument(
        "--priority", type=int, default=0, help="peering priority; replicas must differ"
    )
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    try:
        settings = load_settings(**({"namespace": args.namespace} if args.namespace else {}))
        namespace = settings.namespace or load_config().namespace
    except (SettingsError, ValueError) as exc:
        print(f"botsession operator: {exc}", file=sys.stderr)
        return 2
    memo = kopf.Memo(settings=settings)
    asyncio.run(
        kopf.operator(
            registry=registry,
            memo=memo,
            namespaces=[namespace],
            clusterwide=False,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="botsession operator")
    add_arguments(parser)
    return run(parser.parse_args(argv))
