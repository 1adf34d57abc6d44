"""What a stream's source process is given: its input, in a few picklable fields.

The source process is spawned and unpickles this alone, so this module and what it imports stay light (PyAV,
numpy, Pillow): never the configuration or the parsers' libraries (OpenCV, SciPy, ONNX Runtime, torch), which
would cost every stream tens of MB (`docs/multi.md`; `tests/test_source_spec.py` checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vidparse.stages.images import ImageSet, ImageSource
from vidparse.stages.source import FrameWindow, InputLimits, LiveOptions, StopSignal, VideoSource


@dataclass(frozen=True)
class SourceSpec:
    """One input: a video file or live URL (``images`` None) or a set of still images."""

    input_url: str
    live: LiveOptions
    max_frames: int | None = None
    window: FrameWindow | None = None  # read only this part of a file
    images: ImageSet | None = None
    limits: InputLimits | None = None  # what a video input may be (None: anything FFmpeg reads)

    def make_source(self, stop: StopSignal | None = None, on_attempt: Callable[[int, str], None] | None = None,
                    resume_at: int = 0) -> VideoSource | ImageSource:
        """``on_attempt(failures, reason)``: a live input failed to connect and waits before trying again.
        ``resume_at``: a file or images start at that frame (a replacement for a stalled source; a file seeks)."""
        if self.images:
            return ImageSource(self.images, self.max_frames, resume_at)
        return VideoSource(self.input_url, max_frames=self.max_frames, live=self.live, stop=stop, window=self.window,
                           on_attempt=on_attempt, resume_at=resume_at, limits=self.limits)
