"""The namespaces a node lives in: mount, network, PID, UTS and IPC, held open by an init
process (nsinit.py) under `unshare`, and set up so that nothing the node does reaches the
host: a tmpfs on /run, overlays on /var/lib and /var/log whose writes land in the workdir,
stand-in files over the host-wide sysctls the kubelet writes, the node's own interface,
routes and IP forwarding. Killing the init kills every process in it; `setpriv --pdeathsig`
and `unshare --kill-child` do that even when the launcher itself is killed."""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from devstack.cluster import layout
from devstack.process import DevstackError, find_binary

NSINIT = Path(__file__).with_name("nsinit.py")

# Host-wide (not per network namespace) sysctls that kubelet's setupKernelTunables writes.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
OVERLAID = ("/var/lib", "/var/log")  # written by CNI's cache and the kubelet's log links


def setup_script(workdir: Path, hostname: str, in_memory: Sequence[Path] = ()) -> str:
    """The shell script that prepares the namespaces (run inside them, once). Directories
    in in_memory get a tmpfs seen only inside (freed at once when the namespace dies)."""
    ns = workdir / "ns"
    q = shlex.quote
    lines = ["set -eu", "mount -t tmpfs -o mode=0755,size=256m tmpfs /run"]
    for directory in in_memory:
        lines.append(f"mkdir -p {q(str(directory))}")
        lines.append(f"mount -t tmpfs -o mode=0700,size=16g tmpfs {q(str(directory))}")
    for target in OVERLAID:
        top = ns / target.strip("/").replace("/", "-")
        lines.append(f"mkdir -p {q(str(top / 'upper'))} {q(str(top / 'work'))}")
        lines.append(
            f"mount -t overlay overlay -o lowerdir={target},upperdir={top / 'upper'},"
            f"workdir={top / 'work'} {target}"
        )
    lines.append(f"mkdir -p {q(str(ns / 'sysctl'))}")
    for name in KERNEL_TUNABLES:
        stand_in = ns / "sysctl" / name.replace("/", ".")
        lines.append(f"cat /proc/sys/{name} > {q(str(stand_in))}")
        lines.append(f"mount --bind {q(str(stand_in))} /proc/sys/{name}")
    lines += [
        f"hostname {q(hostname)}",
        "ip link set lo up",
        # a veth pair, both ends inside: the node's interface, with carrier, going nowhere
        "ip link add node0 type veth peer name node0-peer",
        "ip link set node0-peer up",
        f"ip addr add {layout.NODE_IP}/{layout.NODE_PREFIX} dev node0",
        "ip link set node0 up",
        # ClusterIPs need a route before kube-proxy's DNAT rewrites them
        f"ip route add {layout.SERVICE_CIDR} dev node0",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then",
        "  echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables",
        "fi",
    ]
    return "\n".join(lines) + "\n"


def _parent_pid(stat: Path) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    return 0


class NodeNamespace:
    """The namespaces, their init process, and how to run a command inside them."""

    def __init__(self, workdir: Path, hostname: str, in_memory: Sequence[Path] = ()) -> None:
        self.workdir = workdir
        self.hostname = hostname
        self.in_memory = tuple(in_memory)
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0
        self.log_path = workdir / "namespace.log"

    def start(self) -> None:
        (self.workdir / "ns").mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    find_binary("setpriv"),
                    "--pdeathsig",
                    "KILL",
                    "--",
                    find_binary("unshare"),
                    "--mount",
                    "--net",
                    "--pid",
                    "--uts",
                    "--ipc",
                    "--kill-child",
                    "--mount-proc",
                    "--propagation",
                    "private",
                    sys.executable,
                    "-I",
                    str(NSINIT),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        if not ready or self.proc.stdout.readline().strip() != b"ready":
            raise DevstackError(f"the node's namespaces did not start: see {self.log_path}")
        self.init_pid = self._child_of(self.proc.pid)
        script = setup_script(self.workdir, self.hostname, self.in_memory)
        (self.workdir / "ns" / "setup.sh").write_text(script)
        done = subprocess.run(
            self.command(["sh", "-c", script]), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DevstackError(f"setting up the node's namespaces failed: {done.stderr.strip()}")

    @staticmethod
    def _child_of(pid: int) -> int:
        children = [
            stat.parent.name
            for stat in Path("/proc").glob("[0-9]*/stat")
            if _parent_pid(stat) == pid
        ]
        if len(children) != 1:
            raise DevstackError(f"unshare ({pid}) has children {children}, expected one")
        return int(children[0])

    def command(self, argv: Sequence[str], *, net_only: bool = False) -> list[str]:
        """argv prefixed so that it runs inside: every namespace (with the workdir as its
        working directory), or only the network namespace (keeping the host's files)."""
        nsenter = find_binary("nsenter")
        if net_only:
            return [nsenter, f"--net=/proc/{self.init_pid}/ns/net", "--", *argv]
        return [
            nsenter,
            f"--target={self.init_pid}",
            "--mount",
            "--net",
            "--pid",
            "--uts",
            "--ipc",
            f"--wd={self.workdir}",
            "--",
            *argv,
        ]

    def run(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv), capture_output=True, text=True, check=False, timeout=timeout
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Kill the init, and so every process in the PID namespace, and wait: unshare
        returns once the kernel has reaped them all."""
        if self.proc is None:
            return
        if self.init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
