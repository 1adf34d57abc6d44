"""`python tests/faulty_run.py FAULT ARGS...` is `vidparse ARGS...` with one fault injected into the output stage,
which runs in this (the main) process. Fault tests use it for failures no real file triggers on demand.

- ``unordered-pts``: the timestamp repair is bypassed and the encoder gets decode-order timestamps (pts going
  back by one frame every third frame), as before issue 13: the real muxer refuses them.
- ``sink-bug``: the sink raises an exception vidparse does not know (a bug) on the 4th frame.
"""

from __future__ import annotations

import itertools
import sys

from vidparse.cli import main
from vidparse.stages.sink import VideoSink
from vidparse.stages.timestamps import TimestampRepair


def unordered_pts() -> None:
    shifts = itertools.cycle([0, 2, -1])
    frames = itertools.count()
    TimestampRepair.stamp = lambda self, pts: self.step * (next(frames) + next(shifts))


def sink_bug() -> None:
    write = VideoSink.write

    def failing(self: VideoSink, frame) -> None:
        if self.frames_written == 3:
            raise KeyError("no such thing")
        write(self, frame)

    VideoSink.write = failing


if __name__ == "__main__":  # spawned children import this module as __mp_main__: they stay unpatched
    {"unordered-pts": unordered_pts, "sink-bug": sink_bug}[sys.argv.pop(1)]()
    sys.argv[0] = "vidparse"
    main()
