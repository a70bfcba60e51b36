"""Run the API on uvicorn: `botsession api` or `python -m api`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from api.app import create_app
from api.auth import TokenError
from api.serving import UVICORN_OPTIONS
from api.settings import load_api_settings
from sessions.domain import logs
from sessions.domain.settings import SettingsError, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", help="address to listen on (default: BOTSESSION_API_HOST or 0.0.0.0)"
    )
    parser.add_argument("--port", type=int, help="port (default: BOTSESSION_API_PORT or 8000)")
    parser.add_argument(
        "--namespace",
        help="namespace of the BotSessions (default: BOTSESSION_NAMESPACE "
        "or the kubeconfig's / pod's namespace)",
    )
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    parser.add_argument("--tokens-file", help="default: BOTSESSION_API_TOKENS_FILE")
    parser.add_argument(
        "--migrate",
        action="store_true",
        default=None,
        help="migrate the database at start-up (local use; in a cluster the operator does)",
    )
    parser.add_argument("--log-level", help="default: BOTSESSION_API_LOG_LEVEL or INFO")


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("host", args.host),
            ("port", args.port),
            ("kubeconfig", args.kubeconfig),
            ("tokens_file", args.tokens_file),
            ("migrate", args.migrate),
            ("log_level", args.log_level),
        )
        if value is not None
    }
    try:
        api_settings = load_api_settings(**overrides)
        settings = load_settings(**({"namespace": args.namespace} if args.namespace else {}))
        logs.configure(api_settings.log_level)  # before the app: it logs while it is built
        app = create_app(settings, api_settings=api_settings)
    except (SettingsError, TokenError) as exc:
        print(f"botsession api: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=api_settings.host, port=api_settings.port, **UVICORN_OPTIONS)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="botsession api", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
