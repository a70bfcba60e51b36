"""A private redis-server on a loopback port, without persistence."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Self

from devstack.process import ManagedProcess, ensure_port_free, find_binary, free_port, wait_until


def _ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


class RedisServer(ManagedProcess):
    name = "redis"

    def __init__(
        self, port: int | None = None, workdir: Path | None = None, persistent: bool = False
    ) -> None:
        """persistent: keep the data across stop/start (append-only file in the workdir)."""
        super().__init__(workdir)
        self.persistent = persistent
        self.port = port or free_port()
        self.binary = find_binary(
            "redis-server",
            "/usr/bin/redis-server",
            hint="install it with `sudo apt-get install redis-server` (Debian/Ubuntu; "
            "scripts/bootstrap.sh does this) or put a redis-server 6.2+ on PATH",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        """Start (or start again on the same port, with an empty dataset)."""
        ensure_port_free(self.port, "redis-server")
        self._spawn(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ]
        )
        wait_until(lambda: _ping(self.port), 20, "redis-server", self.proc, self.log_path)
        return self
