"""A child process with a temporary working directory, started and stopped cleanly."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Self


class DevstackError(RuntimeError):
    """A local server could not be found, started or reached; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(port: int, what: str) -> None:
    """Raise a clear error when something already listens on the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise DevstackError(f"{what}: port 127.0.0.1:{port} is already in use")


def find_binary(name: str, *candidates: str | Path, hint: str = "") -> str:
    """The path of a program, from explicit candidates first, then PATH."""
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None and hint:
        raise DevstackError(f"'{name}' was not found: {hint}")
    if found is None:
        raise DevstackError(
            f"'{name}' was not found. Run scripts/bootstrap.sh (it installs the Debian "
            f"packages and builds the control plane), or put '{name}' on PATH."
        )
    return found


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll check() until it is true; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DevstackError(f"{what} exited with code {proc.returncode}{tail(log)}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise DevstackError(f"{what} was not ready after {timeout:.0f} s{tail(log)}")


def tail(log: Path | None, lines: int = 25) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- last lines of " + str(log) + " ---\n" + "\n".join(text)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found


class Lifecycle:
    """start() and close() as a context manager; close() also after a failed start."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class ManagedProcess(Lifecycle):
    """Base for servers: a temp dir, a log file, start/stop."""

    name = "process"

    def __init__(self, workdir: Path | None = None, keep_workdir: bool = False) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"botsession-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keep_workdir = keep_workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"
        self._log: IO[bytes] | None = None

    def _spawn(
        self, argv: Sequence[str], *, user: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            user=user,
            env=env,
            start_new_session=True,
        )
        return self.proc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """Stop the process (SIGKILL after the timeout); the workdir stays until close()."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the process and every descendant (PostgreSQL's backends start sessions of
        their own), SIGCONT on leaving: a server that keeps its connections open but answers
        nothing, as in a hang."""
        assert self.proc is not None, f"{self.name} is not running"
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
