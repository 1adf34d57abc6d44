"""Cuts found by the motion stage (`stages/motion.py`): only between frames that follow one another, also to an empty
view and with tracking alone."""

from __future__ import annotations

import numpy as np

from vidparse.stages.labels import load_label_set
from vidparse.stages.motion import FrameMotion
from vidparse.stages.options import TemporalOptions, TrackingOptions
from vidparse.stages.track_labels import OrderedLabels
from vidparse.stages.types import FrameResult, PersonStats


def shot(seed: int, person_x: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured frame (grey noise, as DIS needs texture) and its parse: one person at ``person_x``."""
    image = np.random.default_rng(seed).integers(0, 256, (96, 128), np.uint8)
    parse = np.zeros((96, 128), np.uint8)
    parse[20:80, person_x:person_x + 24] = 5
    return image, parse


def test_a_cut_is_found_between_consecutive_frames_only() -> None:
    before, after = shot(0, 10), shot(1, 90)  # another picture, its person elsewhere
    for seqs, cut in (((0, 1), True), ((0, 8), False)):  # a live input's dropped frames lie between 0 and 8
        motion = FrameMotion("ultrafast", 1.0, cut_share=0.35)
        assert motion.next(before[0], None, before[1], seqs[0]) is None
        flow = motion.next(after[0], None, after[1], seqs[1])
        assert flow is not None and flow.cut == cut, seqs
    motion = FrameMotion("ultrafast", 1.0, cut_share=0.35)
    motion.next(before[0], None, before[1], 0)
    still = motion.next(before[0], None, before[1], 1)
    assert still is not None and not still.cut, "the same picture again is no cut"
    never = FrameMotion("ultrafast", 1.0, cut_share=1.0)
    never.next(before[0], None, before[1], 0)
    assert not never.next(after[0], None, after[1], 1).cut, "cut_share 1: never"


def test_a_cut_to_an_empty_view_is_found_and_a_detector_missing_everyone_is_not() -> None:
    before, after = shot(0, 10), shot(1, 90)
    nobody = np.zeros_like(after[1])
    for image, cut in ((after[0], True), (before[0], False)):  # another picture; the same one, its person unseen
        motion = FrameMotion("ultrafast", 1.0, cut_share=0.35)
        motion.next(before[0], None, before[1], 0)
        flow = motion.next(image, None, nobody, 1)
        assert flow is not None and flow.cut == cut


def test_tracking_alone_ends_its_tracks_at_a_cut() -> None:
    """With the vote off (`temporal.window: 1`) the tracks still end at a cut: no ghost of the old shot is bridged
    over the new one."""
    ordered = OrderedLabels(load_label_set("bodypix"), TemporalOptions(window=1), TrackingOptions(), 0.1)
    ordered.open()
    for seq, (image, parse) in enumerate((shot(0, 10), shot(0, 10), shot(1, 90))):
        x = int(np.flatnonzero(parse.any(axis=0))[0])
        person = PersonStats(box=(x, 20, x + 24, 80), score=0.9, part_pixels={})
        frame = ordered.process(parse, image, FrameResult(seq, [person]), ordered.measure(image, parse, seq))
    assert frame.result.cut
    assert [(p.track_id, p.bridged) for p in frame.result.persons] == [(2, False)]
