"""`--engine ray`: one Ray task per segment, with ``cpus_per_task`` CPUs each (Ray runs as many at a time as the
cluster's CPUs allow, and reruns a task whose node died). Ray is an optional extra: ``pip install vidparse[ray]``."""

from __future__ import annotations

import logging
import os
import socket
from concurrent.futures import Future
from typing import Any

from vidparse.batch.segment import SegmentResult, SegmentTask, run_segment
from vidparse.errors import ConfigError, VidparseError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
NODE_FAILURE_RETRIES = 3  # Ray reruns a task this many times when its worker or node dies
# a client's HTTP/2 opening: the preface and an empty SETTINGS frame; a server's first frame is its SETTINGS
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_FRAME_TYPE = 3  # the byte of a frame header (length: 3, type: 1, flags: 1, stream: 4) giving its type
HTTP2_SETTINGS = 4


class ClusterUnreachable(VidparseError):
    """The Ray cluster cannot be reached: no input can run."""

    exit_code = 3


def check_reachable(address: str) -> None:
    """Fail in seconds, with one line, when nothing listens at HOST:PORT (Ray itself would wait a minute)."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be auto or HOST:PORT, not '{address}'", hint="e.g. 10.0.0.5:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as connection:
            answers_grpc = _uses_tls() or _answers_grpc(connection)
    except OSError as exc:
        raise ClusterUnreachable(f"Ray cluster at {address} is unreachable: {exc.strerror or exc}",
                                 hint="start it with `ray start --head`, or check the address and the firewall"
                                 ) from exc
    if not answers_grpc:  # ray.init would retry such a port for many minutes, deaf to Ctrl-C
        raise ClusterUnreachable(f"Ray cluster at {address} is unreachable: what listens there is not a Ray head",
                                 hint="give the head's GCS port (`ray start --head` prints it; 6379 by default), "
                                      "not the dashboard's or another service's")


def _uses_tls() -> bool:
    """Whether Ray speaks TLS to its cluster (as Ray reads RAY_USE_TLS): its GCS then answers no plain HTTP/2."""
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def _answers_grpc(connection: socket.socket) -> bool:
    """Whether the server answers an HTTP/2 connection preface with a SETTINGS frame, as the Ray head's GCS (a gRPC
    server) does; an HTTP/1 server, Redis or a silent one does not."""
    connection.sendall(HTTP2_PREFACE)
    header = b""
    while len(header) < HTTP2_FRAME_TYPE + 1 and (data := connection.recv(HTTP2_FRAME_TYPE + 1 - len(header))):
        header += data
    return len(header) > HTTP2_FRAME_TYPE and header[HTTP2_FRAME_TYPE] == HTTP2_SETTINGS


class RayEngine:
    def __init__(self, address: str, cpus_per_task: int) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--engine ray needs Ray", hint="pip install 'vidparse[ray]'") from exc
        check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterUnreachable(f"Ray cluster at {address} is unreachable: {exc}".splitlines()[0],
                                     hint="start it with `ray start --head`, or check the address") from exc
        largest = max((int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")), default=0)
        if cpus_per_task > largest:  # Ray would keep every segment waiting for such a node
            ray.shutdown()
            raise ConfigError(f"--cpus-per-task {cpus_per_task} is more than any node of the Ray cluster at {address} "
                              f"has ({largest} CPUs): no segment could start",
                              hint=f"--cpus-per-task {max(largest, 1)}, or add a larger node")
        self._ray = ray
        self.cpus_per_task = cpus_per_task
        self._remote: Any = ray.remote(num_cpus=cpus_per_task, max_retries=NODE_FAILURE_RETRIES)(run_segment)
        self._refs: dict[Future[SegmentResult], Any] = {}

    @property
    def description(self) -> str:
        nodes = [node for node in self._ray.nodes() if node.get("Alive")]
        cpus = int(self._ray.cluster_resources().get("CPU", 0))
        return f"ray: {len(nodes)} node(s), {cpus} CPU(s), {self.cpus_per_task} CPU per segment"

    def submit(self, task: SegmentTask) -> Future[SegmentResult]:
        ref = self._remote.remote(task)
        future: Future[SegmentResult] = ref.future()
        self._refs[future] = ref
        future.add_done_callback(lambda done: self._refs.pop(done, None))
        return future

    def cancel(self, future: Future[SegmentResult]) -> None:
        """The task gets a KeyboardInterrupt, which aborts its engine; a task not started never runs."""
        if (ref := self._refs.get(future)) is not None:
            self._ray.cancel(ref)

    def close(self) -> None:
        self._ray.shutdown()
