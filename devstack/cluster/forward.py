"""A port on the host's 127.0.0.1 that reaches an address inside the node's network
namespace: the API server, a ClusterIP (kube-proxy's rules apply there), a Pod IP. The
listening socket is made here, in the host's namespace, and handed to tcp_relay.py
running in the node's: no route, interface or iptables rule changes on the host."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Self

from devstack.cluster.components import NodeProcess
from devstack.cluster.namespace import NodeNamespace
from devstack.process import ensure_port_free

RELAY = Path(__file__).with_name("tcp_relay.py")


class Forward(NodeProcess):
    """127.0.0.1:port on the host -> host:port inside the node (a context manager)."""

    def __init__(
        self, namespace: NodeNamespace, target_host: str, target_port: int, port: int = 0
    ) -> None:
        if port:
            ensure_port_free(port, "port forward")
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(128)
        self.port: int = self.listener.getsockname()[1]
        self.target = f"{target_host}:{target_port}"
        super().__init__(
            namespace,
            f"forward-{self.port}",
            [sys.executable, "-I", str(RELAY), str(self.listener.fileno()), target_host,
             str(target_port)],
            net_only=True,
            pass_fds=(self.listener.fileno(),),
        )  # fmt: skip

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        super().start()
        self.listener.close()  # the relay holds it now
        return self

    def close(self) -> None:
        self.stop()
        self.listener.close()
