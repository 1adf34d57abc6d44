"""`--engine local`: segment tasks in threads of this process, as many at a time as the CPUs allow (each task's
pipeline starts its own source and worker processes)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from vidparse.batch.segment import Cancel, SegmentResult, SegmentTask, run_segment
from vidparse.errors import ConfigError
from vidparse.pipeline.cpus import usable_cpus


class LocalEngine:
    def __init__(self, cpus_per_task: int) -> None:
        if cpus_per_task > (cpus := usable_cpus()):  # as many workers taking turns on fewer CPUs: slower, not faster
            raise ConfigError(f"--cpus-per-task {cpus_per_task} is more than this machine's {cpus} usable CPUs",
                              hint=f"--cpus-per-task {cpus} or fewer")
        self.cpus_per_task = cpus_per_task
        self.slots = max(1, cpus // cpus_per_task)
        self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix="vidparse-segment")
        self._cancels: dict[Future[SegmentResult], Cancel] = {}

    @property
    def description(self) -> str:
        return f"local: {self.slots} segment(s) at a time, {self.cpus_per_task} CPU each"

    def submit(self, task: SegmentTask) -> Future[SegmentResult]:
        cancel = Cancel()
        future = self._pool.submit(run_segment, task, cancel)
        self._cancels[future] = cancel
        future.add_done_callback(lambda done: self._cancels.pop(done, None))
        return future

    def cancel(self, future: Future[SegmentResult]) -> None:
        """A waiting segment never starts; a running one's engine is aborted (its processes killed)."""
        if not future.cancel() and (cancel := self._cancels.get(future)) is not None:
            cancel()

    def close(self) -> None:
        for future in list(self._cancels):
            self.cancel(future)
        self._pool.shutdown(wait=True, cancel_futures=True)
