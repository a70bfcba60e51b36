"""Run the operator: `botsession operator` or `python -m controller`."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Sequence

import kopf

from controller.handlers import Peering, registry
from controller.housekeeping_loop import runner_name
from sessions.adapters.kubernetes.client import (
    ApiError,
    CustomObjects,
    KubeClient,
    hand_over_quickly,
    load_config,
)
from sessions.domain import logs, privacy
from sessions.domain.settings import SettingsError, configured_webhooks, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        help="namespace to watch (default: BOTSESSION_NAMESPACE or the kubeconfig's / pod's)",
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
        "--priority",
        default="0",
        help="peering priority; replicas must differ. 'auto': 1000 minus the StatefulSet "
        "ordinal at the end of POD_NAME",
    )
    parser.add_argument("--log-level", default=os.environ.get("BOTSESSION_LOG_LEVEL", "INFO"))


def priority_of(value: str, pod_name: str | None) -> int:
    if value != "auto":
        return int(value)
    match = re.search(r"-(\d+)$", pod_name or "")
    if not match:
        raise ValueError("--priority auto needs POD_NAME ending in a StatefulSet ordinal")
    return 1000 - int(match.group(1))


async def ensure_peering(name: str, namespace: str) -> None:
    """kopf peers only when its KopfPeering object exists: create it if missing (a Helm
    release cannot ship it beside its own CRD, so the operator does)."""
    client = KubeClient(load_config())
    peerings = CustomObjects(client, "kopf.dev", "v1", namespace, "kopfpeerings")
    try:
        await peerings.create(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": name, "namespace": namespace},
            }
        )
    except ApiError as exc:
        if exc.status != 409:
            raise
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    try:
        settings = load_settings(**({"namespace": args.namespace} if args.namespace else {}))
        namespace = settings.namespace or load_config().namespace
        priority = priority_of(args.priority, os.environ.get("POD_NAME"))
        webhooks = configured_webhooks(settings)
    except (SettingsError, ValueError) as exc:
        print(f"botsession operator: {exc}", file=sys.stderr)
        return 2
    peering = None
    if args.peering:
        # kopf names itself after POD_ID; the housekeeping finds itself among kopf's peers by it
        identity = os.environ.setdefault("POD_ID", runner_name())
        peering = Peering(args.peering, identity, priority)
    privacy.configure(
        settings.fingerprint_key.get_secret_value() if settings.fingerprint_key else None
    )
    memo = kopf.Memo(settings=settings, peering=peering, webhooks=webhooks)
    hand_over_quickly()

    async def operate() -> None:
        if args.peering:
            await ensure_peering(args.peering, namespace)
        await kopf.operator(
            registry=registry,
            memo=memo,
            namespaces=[namespace],
            clusterwide=False,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=priority,
            liveness_endpoint=args.liveness,
        )

    asyncio.run(operate())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="botsession operator")
    add_arguments(parser)
    return run(parser.parse_args(argv))
