"""`vidparse bench` and `vidparse tune`: the real pipeline per worker count, with speed-up and efficiency against the
fewest workers, and on a wide input the detector's pass for small people measured on and off."""

from __future__ import annotations

import functools
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import VTEST, cut_clip, run_cli, vtest_h264
from vidparse.bench import machine_description, small_people_settings
from vidparse.config import load_config
from vidparse.names import plural

FAST = Path(__file__).with_name("fast.yaml")
ROW = re.compile(r"^\| (\d+) \| (\d+) \| ([^|]+) \| ([\d.]+) \| ([\d.]+)x \| (\d+)% \| (\d+) \|", re.M)


@pytest.fixture(scope="module")
def wide_clip(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 vtest frames scaled to 1280x960 (H.264): wide enough for the detector's pass for small people."""
    return vtest_h264(tmp_path_factory.mktemp("clips") / "vtest_wide.mp4", 24, (1280, 960))


def test_bench_reports_each_worker_count_with_its_scaling(clip: Path, tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    result = run_cli("bench", str(clip), "--frames", "8", "--workers", "1,2", "--threads", "1", "--config", str(FAST),
                     "--markdown", str(table))
    assert result.returncode == 0, result.stderr
    rows = ROW.findall(table.read_text())
    narrow = "off (under 1280 px wide)"  # vtest is 768 wide: no pass for small people, nothing to compare
    assert [(w, t, small) for w, t, small, *_ in rows] == [("1", "1", narrow), ("2", "1", narrow)]
    (_, _, _, fps1, speedup1, eff1, ceiling1), (_, _, _, fps2, speedup2, eff2, ceiling2) = rows
    # the serial threads (hub, motion, compose, emit) allow more than what one stream of BodyPix crops reached
    assert float(ceiling1) > float(fps1) and float(ceiling2) > float(fps2)
    assert "hub thread ms | motion thread ms | compose thread ms | emit thread ms" in table.read_text()
    assert (speedup1, eff1) == ("1.00", "100")
    assert abs(float(speedup2) - float(fps2) / float(fps1)) < 0.02
    assert abs(int(eff2) - 100 * float(speedup2) / 2) <= 1


def test_bench_declares_the_fewest_frames_it_takes(clip: Path) -> None:
    """--help said [x>=1] while --frames 1 and 2 were refused at run time for a minimum of 3: help and the error
    now give the same minimum, before any work."""
    assert "[x>=3]" in run_cli("bench", "--help").stdout
    result = run_cli("bench", str(clip), "--frames", "2", "--workers", "1", "--config", str(FAST))
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--frames': Input should be greater than or equal to 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_names_the_frames_it_ran_and_refuses_an_input_too_short(tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    four = vtest_h264(tmp_path / "four.mp4", 4)
    config = tmp_path / "three-threads.yaml"  # without --threads, the --config file's threads are benched
    config.write_text(FAST.read_text() + "threads: 3\n")
    result = run_cli("bench", str(four), "--frames", "100", "--workers", "1", "--config", str(config),
                     "--markdown", str(table))
    assert result.returncode == 0, result.stderr
    assert "first 4 frames" in table.read_text()
    assert [(w, t) for w, t, *_ in ROW.findall(table.read_text())] == [("1", "3")]
    two = vtest_h264(tmp_path / "two.mp4", 2)
    result = run_cli("bench", str(two), "--workers", "1", "--config", str(FAST))
    assert result.returncode == 3 and "is too short to benchmark: 2 frames" in result.stderr, result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    live = run_cli("bench", "rtsp://user:s3cret@127.0.0.1:9/cam", "--workers", "1", "--config", str(FAST))  # unopened
    assert live.returncode == 3 and "bench measures a video file" in live.stderr, live.stderr
    assert "hint: record a clip of it first, or size the workers for it with: vidparse tune" in live.stderr
    assert "rtsp://127.0.0.1:9/cam" in live.stderr and "s3cret" not in live.stderr, "no password in the output"


def test_bench_refuses_an_input_too_short_before_running_a_trial(tmp_path: Path) -> None:
    """A clip whose header says 2 frames ran every trial (here 2 worker counts, each starting its processes and
    models) and only then was refused."""
    two = vtest_h264(tmp_path / "two.mp4", 2)
    result = run_cli("bench", str(two), "--workers", "1,2", "--config", str(FAST))
    assert result.returncode == 3 and "is too short to benchmark: 2 frames" in result.stderr, result.stderr
    assert "workers=" not in result.stderr, "no trial ran"


@pytest.mark.parametrize("command", [["bench", "--frames", "3"], ["tune", "--seconds", "1", "--max-workers", "1"]])
def test_a_url_too_short_to_measure_is_named_without_its_password(command: list[str], tmp_path: Path) -> None:
    cut_clip(VTEST, tmp_path / "two.avi", 2)  # AVI: an MP4 over a server without Range requests is another error
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"127.0.0.1:{server.server_address[1]}/two.avi"
            result = run_cli(command[0], f"http://user:s3cret@{url}", *command[1:], "--config", str(FAST),
                             "--workers" if command[0] == "bench" else "--write", "1" if command[0] == "bench"
                             else str(tmp_path / "tuned.yaml"))
        finally:
            server.shutdown()
    assert result.returncode == 3 and f"error: http://{url} is too short" in result.stderr, result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def detect_ms(table: str, row: tuple[str, ...]) -> float:
    header = next(line for line in table.splitlines() if line.startswith("| workers |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    line = next(line for line in table.splitlines() if line.startswith("| " + " | ".join(row[:3]) + " |"))
    return float(line.strip("|").split("|")[cells.index("detect ms")])


def test_bench_on_a_wide_input_measures_the_small_people_pass_on_and_off(wide_clip: Path, tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    result = run_cli("bench", str(wide_clip), "--frames", "6", "--workers", "1", "--threads", "1", "--config",
                     str(FAST), "--markdown", str(table))
    assert result.returncode == 0, result.stderr
    rows = ROW.findall(table.read_text())
    assert [(small, eff) for _, _, small, _, _, eff, _ in rows] == [("on", "100"), ("off", "100")]
    assert {(w, t) for w, t, *_ in rows} == {("1", "1")}
    # 1280x960: the whole frame and 12 tiles against the whole frame alone
    assert detect_ms(table.read_text(), rows[0]) > 3 * detect_ms(table.read_text(), rows[1]), table.read_text()


def test_tune_on_a_wide_input_also_measures_its_pick_without_the_small_people_pass(wide_clip: Path,
                                                                                  tmp_path: Path) -> None:
    tuned = tmp_path / "tuned.yaml"
    result = run_cli("tune", str(wide_clip), "--seconds", "1", "--config", str(FAST), "--max-workers", "1",
                     "-w", str(tuned))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("best, no small-people pass") == 1
    without = re.search(r"^# The pass for small people .* ran on this input: ([\d.]+) fps without it",
                        tuned.read_text(), re.M)
    assert without and float(without.group(1)) > 0, tuned.read_text()
    assert "tiles" not in tuned.read_text().split("# Use:")[1], "the small-people settings are not changed"


def test_the_small_people_pass_off_also_turns_off_the_finer_segmenter_cells() -> None:
    config = load_config()  # cihp-net
    (on_label, on), (off_label, off) = small_people_settings(config, 1280)
    assert (on_label, off_label) == ("on", "off") and on is config
    assert (off.detector.tiles, off.detector.zoom_below, off.parser_options.wide_frame_width) == (0, 0, 0)
    only_the_segmenter = load_config(overrides={"detector.tiles": 0, "detector.zoom_below": 0})
    assert [label for label, _ in small_people_settings(only_the_segmenter, 1920)] == ["on", "off"]
    assert [label for label, _ in small_people_settings(config, 768)] == ["off (under 1280 px wide)"]


def test_one_usable_cpu_is_said_in_the_singular() -> None:
    """Under `taskset -c 0` bench's and tune's machine line said "1 usable CPUs" (and a run's warning "2 workers on
    1 usable CPUs")."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        said = machine_description()
    finally:
        os.sched_setaffinity(0, allowed)
    assert ", 1 usable CPU, Python" in said
    assert plural(1, "usable CPU") == "1 usable CPU" and plural(2, "usable CPU") == "2 usable CPUs"


def test_worker_counts_are_tried_each_once_fewest_first() -> None:
    """``--workers 2,1,1`` ran 1 worker twice, after 2: a row of 0.57x speed-up first and one of 110% efficiency
    against itself."""
    from vidparse.cli import _worker_counts

    assert _worker_counts("2,1,1") == [1, 2]
