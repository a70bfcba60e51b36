"""The operator as a real subprocess (`python -m controller`), for tests and the local stack."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Self

from devstack.process import ManagedProcess, wait_until


class OperatorProcess(ManagedProcess):
    name = "operator"

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        env: dict[str, str],
        args: tuple[str, ...] = (),
        workdir: Path | None = None,
    ) -> None:
        super().__init__(workdir)
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.env = env
        self.args = args

    def start(self) -> Self:
        env = {
            **os.environ,
            **self.env,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
        }
        self._spawn(
            [sys.executable, "-m", "controller", "--namespace", self.namespace, *self.args], env=env
        )
        wait_until(
            lambda: (
                "Starting the main handler" in self.output()
                or "Resuming" in self.output()
                or "startup" in self.output()
            ),
            60,
            "the operator",
            self.proc,
            self.log_path,
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
