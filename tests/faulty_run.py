"""`python tests/faulty_run.py FAULT ARGS...` is `vidparse ARGS...` with one fault injected into the output stage,
which runs in this (the main) process. Fault tests use it for failures no real file triggers on demand.

- ``unordered-pts``: the timestamp repair is bypassed and the encoder gets decode-order timestamps (pts going
  back by one frame every third frame), as before issue 13: the real muxer refuses them.
- ``sink-bug``: the sink raises an exception vidparse does not know (a bug) on the 4th frame.
- ``parse-bug``: in every worker (spawned workers import this module as ``__mp_main__``; the fault is passed to
  them in ``VIDPARSE_TEST_FAULT``), parsing frame 2 raises, each time it is tried.
"""

from __future__ import annotations

import itertools
import os
import sys

from vidparse.cli import main
from vidparse.jobs import LabelsParser
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


def parse_bug() -> None:
    process = LabelsParser.process

    def failing(self: LabelsParser, image, key, group):
        if key.seq == 2:
            raise ValueError("injected parse fault")
        return process(self, image, key, group)

    LabelsParser.process = failing


if __name__ == "__mp_main__" and os.environ.get("VIDPARSE_TEST_FAULT") == "parse-bug":
    parse_bug()  # a spawned worker

if __name__ == "__main__":  # spawned children import this module as __mp_main__: other faults leave them unpatched
    fault = sys.argv.pop(1)
    if fault == "parse-bug":
        os.environ["VIDPARSE_TEST_FAULT"] = fault
    else:
        {"unordered-pts": unordered_pts, "sink-bug": sink_bug}[fault]()
    sys.argv[0] = "vidparse"
    main()
