"""The output stage: recolor each parsed frame, encode it, and write the optional masks and statistics."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vidparse.stages.recolor import ComposeOptions, Recolor
from vidparse.stages.sink import EncoderOptions, VideoSink
from vidparse.stages.source import StreamInfo
from vidparse.stages.temporal import TemporalOptions, TemporalVote
from vidparse.stages.types import Frame, FrameResult, LabelSet
from vidparse.stages.writers import MaskWriter, StatsWriter


class AnnotatedOutput:
    def __init__(
        self,
        info: StreamInfo,
        label_set: LabelSet,
        video_path: Path,
        compose: ComposeOptions,
        encoder: EncoderOptions,
        audio_from: str | None = None,
        masks_dir: Path | None = None,
        stats_path: Path | None = None,
        temporal: TemporalOptions | None = None,
    ) -> None:
        self.temporal = TemporalVote(temporal) if temporal else None
        self.recolor = Recolor(label_set, compose)
        self.sink = VideoSink(video_path, info, encoder, audio_from)
        self.masks = MaskWriter(masks_dir, label_set) if masks_dir else None
        self.stats = StatsWriter(stats_path) if stats_path else None

    def _side_outputs(self) -> list:
        return [writer for writer in (self.masks, self.stats) if writer is not None]

    def open(self) -> None:
        self.sink.open()
        for writer in self._side_outputs():
            writer.open()

    def write(self, frame: Frame, arrays: dict[str, np.ndarray], result: FrameResult) -> tuple[np.ndarray, np.ndarray]:
        """Write one frame from its parser ``arrays``; returns the labels written (after the temporal vote) and the
        annotated image."""
        started = time.perf_counter()
        labels = arrays["labels"]
        if self.temporal:
            labels = self.temporal.process(labels, frame.image)
        annotated = self.recolor.process(frame.image, labels)
        composed = time.perf_counter()
        self.sink.write(replace(frame, image=annotated))
        result.timings["compose"] = composed - started
        result.timings["encode"] = time.perf_counter() - composed
        if self.masks:
            self.masks.write(frame.seq, labels)
        if self.stats:
            latency = None if frame.captured_at is None else round((time.time() - frame.captured_at) * 1000, 1)
            self.stats.write(result, frame.pts, frame.seconds, {"latency_ms": latency})
        return labels, annotated

    def close(self) -> None:
        try:
            self.sink.close()
        finally:
            for writer in self._side_outputs():
                writer.close()
