"""`python tests/faulty_run.py FAULT ARGS...` is `vidparse ARGS...` with one fault injected into the output stage,
which runs in this (the main) process. Fault tests use it for failures no real file triggers on demand.

- ``unordered-pts``: the timestamp repair is bypassed and the encoder gets decode-order timestamps (pts going
  back by one frame every third frame), as before issue 13: the real muxer refuses them.
- ``sink-bug``: the sink raises an exception vidparse does not know (a bug) on the 4th frame.
- ``disk-hiccup``: the first write of a 4th frame meets an I/O error, once (a network disk's hiccup); every write
  after it works.
- ``parse-bug``: in every worker, parsing frame 2 raises, each time it is tried. The workers never import this
  script (`pipeline/spawning.py`): the engine is given a parser spec whose class is defined here, in ``__main__``,
  so it reaches them by value (``multiprocess`` pickles with dill).
"""

from __future__ import annotations

import errno
import itertools
import sys

import dill

from vidparse import jobs
from vidparse.cli import main
from vidparse.jobs import LabelsParser, ParserSpec
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


def disk_hiccup() -> None:
    mux = VideoSink._mux
    hiccups = [OSError(errno.EIO, "Input/output error")]

    def once(self: VideoSink, packets) -> None:
        if hiccups and self.frames_written == 3:
            error = hiccups.pop()

            def failing():
                raise error
            return mux(self, failing)
        return mux(self, packets)

    VideoSink._mux = once


class FailingParser(LabelsParser):
    def process(self, image, key, group):
        if key.seq == 2:
            raise ValueError("injected parse fault")
        return LabelsParser.process(self, image, key, group)


class FailingParserSpec(ParserSpec):
    def make_parser(self, threads: int) -> FailingParser:
        return FailingParser(ParserSpec.make_parser(self, threads).stage)


def parse_bug() -> None:
    dill.settings["recurse"] = True  # a function defined here travels with the globals it uses (FailingParser)
    jobs.ParserSpec = FailingParserSpec  # what `jobs.build_engine` gives the workers


if __name__ == "__main__":
    fault = sys.argv.pop(1)
    {"unordered-pts": unordered_pts, "sink-bug": sink_bug, "disk-hiccup": disk_hiccup, "parse-bug": parse_bug}[fault]()
    sys.argv[0] = "vidparse"
    main()
