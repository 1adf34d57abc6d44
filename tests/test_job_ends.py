"""The service reads how a job's stream ended from the engine's `StreamEnd`, its error first: a job whose output
fails while it closes (after every frame was written) is failed, not done. The real job manager, engine, BodyPix
worker and video; only the output's close is made to fail after it really closed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import REPO
from vidparse.config import load_config
from vidparse.errors import BadOutputError
from vidparse.jobs import ParserSpec, ResolvedModels, StreamSpec
from vidparse.service.engine import EngineHost
from vidparse.service.inputs import InputPolicy, UrlPolicy
from vidparse.service.job_manager import JobManager
from vidparse.service.metrics import Metrics


def failing_at_close(make_output):
    def make(spec: StreamSpec, info):
        output = make_output(spec, info)
        close = output.close

        def close_then_fail() -> None:
            close()
            raise BadOutputError("the disk filled up while the file was finalized")

        output.close = close_then_fail
        return output

    return make


@pytest.mark.slow
def test_a_job_whose_output_fails_at_close_is_failed(clip: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StreamSpec, "make_output", failing_at_close(StreamSpec.make_output))
    config = load_config(REPO / "tests" / "fast.yaml", {"workers": 1})
    engines = EngineHost(config, ParserSpec(config, ResolvedModels.for_config(config)))
    jobs = JobManager(config, engines, tmp_path, Metrics(), InputPolicy(UrlPolicy()))
    try:
        job = jobs.reserve(str(clip))
        jobs.start(job, str(clip), max_frames=None)
        deadline = time.monotonic() + 120
        while job.state in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        engines.stop()
    assert job.frames == 12, "every frame was written before the close failed"
    assert (job.state, job.error) == ("failed", "the disk filled up while the file was finalized")
    assert job.describe()["result"] is None
