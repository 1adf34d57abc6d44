"""The timestamp rule of stages/timestamps.py, case by case (docs/faults.md, "Timestamps")."""

from fractions import Fraction

import numpy as np
import pytest

from vidparse.stages.orientation import Turn, turn_for_display_matrix
from vidparse.stages.timestamps import BestEffortTimestamps, TimestampRepair


def repaired(pts: list[int | None], max_gap_s: float = 10.0) -> tuple[list[int], int]:
    repair = TimestampRepair(Fraction(1, 10), Fraction(10), max_gap_s)
    return [repair.stamp(p) for p in pts], repair.repaired


@pytest.mark.parametrize(
    "pts, expected, count",
    [
        ([0, 1, 2, 5, 6], [0, 1, 2, 5, 6], 0),  # variable frame rate: kept
        ([None, None, None], [0, 1, 2], 3),  # missing: one nominal frame after the previous
        ([0, 1, 1, 2, 5], [0, 1, 2, 3, 5], 2),  # duplicate: pushed on, the next one too, then back on time
        ([0, 2, 1, 3, 4], [0, 2, 3, 4, 5], 3),  # reordered
        ([0, 1, 2, 500, 501], [0, 1, 2, 3, 4], 1),  # jump of 50 s forward: closed, the spacing after it kept
        ([300, 301, 302, 7, 8, 10], [300, 301, 302, 303, 304, 306], 1),  # jump back: re-based, spacing kept
    ],
    ids=["vfr", "missing", "duplicate", "reordered", "jump-forward", "jump-back"],
)
def test_one_rule_makes_timestamps_strictly_increase(pts, expected, count) -> None:
    assert repaired(pts) == (expected, count)


def test_best_effort_switches_to_dts_once_pts_go_backwards_more_often() -> None:
    guess = BestEffortTimestamps()
    # A B-frame AVI: the pts come in decode order, the dts increase.
    got = [guess.guess(p, d) for p, d in [(1, 2), (4, 3), (3, 4), (5, 5), (2, 6), (8, 7), (7, 8)]]
    assert got == [1, 4, 4, 5, 6, 7, 8]
    assert [BestEffortTimestamps().guess(None, 7), BestEffortTimestamps().guess(7, None)] == [7, 7]


def display_matrix(a: int, b: int, c: int, d: int) -> np.ndarray:
    return np.array([a, b, 0, c, d, 0, 0, 0, 1 << 30], np.int32) * np.array([65536] * 8 + [1], np.int32)


@pytest.mark.parametrize(
    "matrix, turn",
    [
        (None, Turn.NONE),
        (display_matrix(1, 0, 0, 1), Turn.NONE),
        (display_matrix(0, -1, 1, 0), Turn.CCLOCK),  # ffmpeg -metadata:s:v rotate=90 (checked against ffmpeg)
        (display_matrix(-1, 0, 0, -1), Turn.HALF),  # rotate=180
        (display_matrix(0, 1, -1, 0), Turn.CLOCK),  # rotate=270
        (display_matrix(-1, 0, 0, 1), Turn.HFLIP),  # av_display_matrix_flip(hflip)
        (display_matrix(1, 0, 0, -1), Turn.VFLIP),  # av_display_matrix_flip(vflip)
        (display_matrix(0, 1, 1, 0), Turn.TRANSPOSE),  # a quarter turn and a flip
        (display_matrix(0, -1, -1, 0), Turn.ANTITRANSPOSE),
    ],
    ids=["none", "identity", "rotate90", "rotate180", "rotate270", "hflip", "vflip", "transpose", "antitranspose"],
)
def test_display_matrix_gives_the_turn_ffmpeg_applies(matrix, turn: Turn) -> None:
    assert turn_for_display_matrix(matrix) is turn


def test_turns_move_pixels_as_named() -> None:
    image = np.array([[1, 2, 3], [4, 5, 6]])
    assert Turn.CLOCK.apply(image).tolist() == [[4, 1], [5, 2], [6, 3]]
    assert Turn.CCLOCK.apply(image).tolist() == [[3, 6], [2, 5], [1, 4]]
    assert Turn.TRANSPOSE.apply(image).tolist() == [[1, 4], [2, 5], [3, 6]]
    assert Turn.ANTITRANSPOSE.apply(image).tolist() == [[6, 3], [5, 2], [4, 1]]
    assert Turn.HALF.apply(image).tolist() == [[6, 5, 4], [3, 2, 1]]
    assert Turn.HFLIP.apply(image).tolist() == [[3, 2, 1], [6, 5, 4]]
    assert Turn.VFLIP.apply(image).tolist() == [[4, 5, 6], [1, 2, 3]]
    assert all(t.apply(image).flags.c_contiguous for t in Turn)
