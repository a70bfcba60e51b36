"""Relays TCP connections accepted on an inherited listening socket, made in the host's
network namespace, to an address seen from this process's network namespace (a node's).
Run there by devstack.cluster.forward: `python3 -I tcp_relay.py FD HOST PORT`.
Standard library only."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def relay(client: socket.socket, target: tuple[str, int]) -> None:
    with client:
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            return
        with upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
            back.start()
            pump(client, upstream)
            back.join()


def main(argv: list[str]) -> int:
    listener = socket.socket(fileno=int(argv[1]))
    target = (argv[2], int(argv[3]))
    while True:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client, target), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
