"""PID 1 of a node's namespaces (see devstack.cluster.namespace): says "ready", then reaps
every orphan that the namespace's daemons leave (containerd shims, exited containers) until
it is killed, and with it the kernel kills every process left in the PID namespace.
Standard library only: it runs as a script, `python3 -I nsinit.py`."""

from __future__ import annotations

import os
import signal
import sys


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        signal.sigwait({signal.SIGCHLD})
        reap()


if __name__ == "__main__":
    sys.exit(main())
