"""The Kubernetes API through the `kubernetes` package: its configuration loading (kubeconfig
with exec and OIDC plugins, or in-cluster credentials with the rotating service-account
token) and its API client, called from asyncio on a thread pool, with the project's error
mapping.

Errors become ApiUnavailable (unreachable, timed out, 429 throttled, 5xx: retry later) or
ApiError (any other status, with the server's reason and message). Why this library and not
kubernetes_asyncio or a client of our own: docs/architecture.md, "The Kubernetes client".
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sessions.domain.model import StoreUnavailable

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SWITCH_INTERVAL = 0.0005  # seconds: see hand_over_quickly
T = TypeVar("T")
# the OS errors urllib3 lets through (besides its own HTTPError)
TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class ApiUnavailable(StoreUnavailable):
    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__("kubernetes", detail, retry_after)


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}")


@dataclass
class Connection:
    """Where the API server is and how to authenticate (the library's Configuration, whose
    refresh hook renews exec-plugin, OIDC and service-account tokens before they expire),
    and the namespace of the kubeconfig's context or of the pod."""

    configuration: k8s.Configuration
    namespace: str


def load_kubeconfig(path: Path | None = None, context: str | None = None) -> Connection:
    """`path`, or what $KUBECONFIG names (several files are merged), or ~/.kube/config."""
    configuration = k8s.Configuration()
    config_file = str(path) if path else None
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        contexts, active = k8s_config.list_kube_config_contexts(config_file)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException as exc:
        raise ValueError(f"no usable Kubernetes credentials: {exc}") from exc
    if context:
        active = next((c for c in contexts if c["name"] == context), None)
        if active is None:
            raise ValueError(f"no context {context!r} in the kubeconfig")
    namespace = (active.get("context") or {}).get("namespace") or "default"
    return Connection(configuration, namespace)


def load_in_cluster() -> Connection:
    configuration = k8s.Configuration()
    k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
    return Connection(configuration, namespace)


def load_config(kubeconfig: str | None = None) -> Connection:
    """The given kubeconfig; else, as kopf's login does, the pod's service account when
    running in a cluster, then $KUBECONFIG or ~/.kube/config."""
    try:
        if kubeconfig:
            return load_kubeconfig(Path(kubeconfig).expanduser())
        if "KUBERNETES_SERVICE_HOST" in os.environ:
            return load_in_cluster()
        return load_kubeconfig()
    except k8s_config.ConfigException as exc:
        raise ValueError(f"no usable Kubernetes credentials: {exc}") from exc


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """A Retry-After header (RFC 9110): delay-seconds or an HTTP date; `default` when it is
    missing or unreadable."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_of(exc: ApiException, what: str) -> Exception:
    status = int(exc.status or 0)
    if status == 0 or status == 429 or status >= 500:
        retry_after = retry_after_seconds((exc.headers or {}).get("Retry-After"))
        return ApiUnavailable(f"{what}: HTTP {status}", retry_after)
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body or ""
    try:
        found = json.loads(body)
    except ValueError:
        found = {}
    details = found if isinstance(found, dict) else {}
    return ApiError(status, details.get("reason", ""), details.get("message", body[:500]))


class KubeClient:
    """One API server connection pool for the process. `call` runs one operation of the
    generated API (`client.custom.get_namespaced_custom_object`, ...) on the client's thread
    pool, with the timeout and the error mapping; `watch` streams a watch of a list
    operation; `create_event` posts an Event."""

    def __init__(
        self, connection: Connection, timeout: float = 10.0, max_connections: int = 50
    ) -> None:
        configuration = connection.configuration
        configuration.connection_pool_maxsize = max_connections
        # no retries inside a call: a failure reaches the caller, whose retry is bounded
        # (kopf's backoff, the API's 503 with Retry-After)
        configuration.retries = False
        self.connection = connection
        self.timeout = timeout
        self.api = k8s.ApiClient(configuration)
        self.custom = k8s.CustomObjectsApi(self.api)
        # Callers queue in the pool's queue (O(1) per waiting caller; a cancelled caller's
        # call is dropped before it starts). One thread per connection.
        self._calls = ThreadPoolExecutor(max_connections, thread_name_prefix="kubernetes")

    @property
    def namespace(self) -> str:
        return self.connection.namespace

    async def call(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        what = getattr(operation, "__name__", "request")
        call = functools.partial(operation, *args, _request_timeout=self.timeout, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._calls, call)
        except ApiException as exc:
            raise _error_of(exc, what) from exc
        except TRANSPORT_ERRORS as exc:
            raise ApiUnavailable(f"{what}: {exc.__class__.__name__}") from exc

    async def watch(
        self, operation: Callable[..., Any], *args: Any, timeout: float, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request ({"type", "object"}), until the server ends it
        (after `timeout` seconds at the latest). The response is read on a thread of its
        own; a watch given up (cancelled) shuts its socket down, which ends that thread's
        blocking read (closing the response from here would wait for the read instead)."""
        what = getattr(operation, "__name__", "watch")
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()
        reading: list[Any] = []  # the response, once the thread has it
        start = functools.partial(
            operation,
            *args,
            watch=True,
            timeout_seconds=int(timeout),
            _preload_content=False,
            _request_timeout=(10.0, timeout + 30.0),
            **kwargs,
        )

        def hand_over(item: str | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(lines.put_nowait, item)

        def read() -> None:
            try:
                response = start()
                reading.append(response)
                try:
                    if stop.is_set():  # given up while it connected: nothing interrupts it
                        return
                    for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                        if stop.is_set():
                            return
                        if line:
                            hand_over(line)
                finally:
                    response.close()
                hand_over(None)
            except BaseException as exc:  # handed to the reader, who raises it
                if not stop.is_set():
                    hand_over(exc)

        threading.Thread(target=read, name="kubernetes-watch", daemon=True).start()
        try:
            while (item := await lines.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield json.loads(item)
        except ApiException as exc:
            raise _error_of(exc, what) from exc
        except TRANSPORT_ERRORS as exc:
            raise ApiUnavailable(f"watch {what}: {exc.__class__.__name__}") from exc
        finally:
            stop.set()
            for response in reading:
                _interrupt(response)

    async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        """POST a core/v1 Event. Through the generic API client: `CoreV1Api`, for this one
        call, would import 250 models (+22 MB in each process)."""
        await self.call(self._post_event, namespace, event)

    def _post_event(
        self, namespace: str, event: dict[str, Any], _request_timeout: float | None = None
    ) -> None:
        request = self.api.param_serialize(
            method="POST",
            resource_path="/api/v1/namespaces/{namespace}/events",
            path_params={"namespace": namespace},
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=event,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=_request_timeout)
        response.read()  # type: ignore[no-untyped-call]
        # raises ApiException for a refusal, as the generated operations do
        self.api.response_deserialize(response, {"201": "object", "200": "object"})

    async def close(self) -> None:
        self._calls.shutdown(wait=False, cancel_futures=True)
        self.api.close()  # type: ignore[no-untyped-call]


def hand_over_quickly() -> None:
    """For a process whose event loop is busy for long stretches (the operator resuming
    thousands of objects): let the client's threads take the GIL back within 0.5 ms instead
    of 5 ms. Each socket read in a thread gives the GIL up and must wait for the loop's next
    switch (the convoy effect): the operator's index LIST took 12.5 s instead of 3.2 s under a
    busy loop. Not for the API: its reports ran 26 % slower with it (docs/benchmarks.md, "The
    Kubernetes client"). Process-wide, so only ever lowered."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))


def _interrupt(response: Any) -> None:
    """End a read blocked on `response` in another thread: shut its socket down."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _body(value: object) -> dict[str, Any]:
    """A custom object's operations are typed `object`: they return the decoded JSON."""
    if not isinstance(value, dict):
        raise ApiError(0, "UnexpectedBody", f"expected a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class CustomObjects:
    """One custom resource in one namespace: the calls the project makes on it."""

    client: KubeClient
    group: str
    version: str
    namespace: str
    plural: str

    def _where(self) -> tuple[str, str, str, str]:
        return self.group, self.version, self.namespace, self.plural

    async def get(self, name: str) -> dict[str, Any]:
        api = self.client.custom
        return _body(await self.client.call(api.get_namespaced_custom_object, *self._where(), name))

    async def list(self, **query: Any) -> dict[str, Any]:
        """One page; query: label_selector, limit, _continue, resource_version."""
        api = self.client.custom
        return _body(
            await self.client.call(api.list_namespaced_custom_object, *self._where(), **query)
        )

    def watch(self, timeout: float, **query: Any) -> AsyncIterator[dict[str, Any]]:
        api = self.client.custom
        return self.client.watch(
            api.list_namespaced_custom_object, *self._where(), timeout=timeout, **query
        )

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        api = self.client.custom
        return _body(
            await self.client.call(api.create_namespaced_custom_object, *self._where(), body)
        )

    async def patch(
        self, name: str, patch: Any, content_type: str, **options: Any
    ) -> dict[str, Any]:
        """`patch` as `content_type` says: a JSON patch (a list) or a merge patch;
        options: dry_run, field_manager."""
        operation = self.client.custom.patch_namespaced_custom_object
        return _body(
            await self.client.call(
                operation, *self._where(), name, patch, _content_type=content_type, **options
            )
        )

    async def patch_status(
        self, name: str, patch: Any, content_type: str, **options: Any
    ) -> dict[str, Any]:
        """The same on the status subresource."""
        operation = self.client.custom.patch_namespaced_custom_object_status
        return _body(
            await self.client.call(
                operation, *self._where(), name, patch, _content_type=content_type, **options
            )
        )

    async def delete(self, name: str, options: dict[str, Any]) -> None:
        api = self.client.custom
        await self.client.call(
            api.delete_namespaced_custom_object, *self._where(), name, body=options
        )
