"""A real Ray cluster on 127.0.0.1 for the tests and the benchmark: a head and more nodes, 1 CPU each, each a
``ray start --block`` in a process group of its own, so that stopping it (or SIGKILL of one node's raylet) touches
only this cluster's processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtsp import free_port

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 120
STOP_GRACE_S = 10


def processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, command line) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        found.append((int(entry.name), int(fields[1]), int(fields[2]), cmdline))
    return found


class RayCluster:
    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay < 108
        self.nodes: list[subprocess.Popen] = []
        self._orphans: dict[int, str] = {}

    def _start(self, *args: str) -> None:
        log = open(Path(self.temp_dir) / f"node{len(self.nodes)}.log", "w")
        node = subprocess.Popen([str(RAY), "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
                                 "--object-store-memory", str(100 * 2**20),
                                 "--dashboard-agent-listen-port", str(free_port()), *args],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())
        self.nodes.append(node)

    def start(self, nodes: int) -> RayCluster:
        self._start("--head", "--port", str(self.port), "--include-dashboard=false", "--temp-dir", self.temp_dir)
        self._wait_for(1)
        for _ in range(nodes - 1):
            self.add_node()
        return self

    def add_node(self) -> None:
        self._start("--address", self.address)
        self._wait_for(len(self.nodes))

    def raylets(self) -> list[int]:
        """Each node's raylet (a child of its ``ray start``)."""
        starts = {node.pid for node in self.nodes}
        return [pid for pid, parent, _, cmd in processes() if parent in starts and _program(cmd) == "raylet"]

    def _descendants(self) -> dict[int, str]:
        """Every process below the nodes, by pid, with its command line. Ray's workers start sessions of their own,
        so the process groups do not hold them."""
        table = processes()
        found = {node.pid: "" for node in self.nodes}
        grew = True
        while grew:
            children = {pid: cmd for pid, parent, _, cmd in table if parent in found and pid not in found}
            found.update(children)
            grew = bool(children)
        return {pid: cmd for pid, cmd in found.items() if cmd}

    def _wait_for(self, raylets: int) -> None:
        """Until ``raylets`` raylets run and the last one has registered (its node log says it started)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.poll() is not None:
                    raise RuntimeError(f"ray start exited with {node.returncode}: see {self.temp_dir}")
            log = (Path(self.temp_dir) / f"node{len(self.nodes) - 1}.log").read_text()
            if len(self.raylets()) >= raylets and "Ray runtime started" in log:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Ray cluster did not start within {START_TIMEOUT_S} s: see {self.temp_dir}")

    def _raylet(self, node: int) -> int:
        (raylet,) = [pid for pid, parent, _, cmd in processes()
                     if parent == self.nodes[node].pid and _program(cmd) == "raylet"]
        return raylet

    def running_task_on(self, node: int, name: str = "ray::run_segment") -> bool:
        """Whether a worker of node ``node`` (0 = head) is running task ``name`` now."""
        raylet = self._raylet(node)
        return any(parent == raylet and cmd.startswith(name) for _, parent, _, cmd in processes())

    def kill_raylet(self, node: int) -> None:
        self._orphans.update(self._descendants())  # its workers lose their parent: stop() still finds them
        os.kill(self._raylet(node), signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM to each node's process group, SIGKILL to what is left after a grace period, and to every process
        that ran below a node (workers and their pipeline processes), checked by command line against pid reuse."""
        below = {**self._orphans, **self._descendants()}
        for node in self.nodes:
            _signal_group(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for node in self.nodes:
            try:
                node.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes:
            _signal_group(node.pid, signal.SIGKILL)
            node.wait()
        alive = {pid: cmd for pid, _, _, cmd in processes()}
        for pid, cmd in below.items():
            if alive.get(pid) == cmd:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _program(cmdline: str) -> str:
    return os.path.basename(cmdline.split(" ")[0])


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass
