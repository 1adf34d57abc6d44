"""`vidparse tune`: real trials of worker layouts on a real clip, and the config file it writes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import multiprocess

from conftest import VTEST, cut_clip, probe_video, run_cli
from vidparse.config import load_config
from vidparse.pipeline.proctree import process_cpu_seconds, tree_cpu_seconds
from vidparse.tune import SAME_FPS, Layout, TrialResult, _Window, best, layouts, tuned_config_text

FAST = Path(__file__).with_name("fast.yaml")


def test_layouts_fit_the_cpus_and_include_the_extremes() -> None:
    assert layouts(1) == [Layout(1, 1)]
    assert layouts(2) == [Layout(1, 1), Layout(1, 2), Layout(2, 1)]
    sixteen = layouts(16)
    assert all(layout.workers * layout.threads <= 16 for layout in sixteen)
    assert {Layout(1, 16), Layout(16, 1), Layout(4, 4), Layout(8, 2), Layout(1, 1)} <= set(sixteen)
    assert {Layout(2, 3), Layout(3, 2), Layout(6, 1)} <= set(layouts(6)), "layouts that fill 6 CPUs"
    assert max(layout.workers for layout in layouts(16, max_workers=4)) == 4


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_tree_cpu_time_counts_child_processes() -> None:
    tree, own = tree_cpu_seconds(os.getpid()), process_cpu_seconds(os.getpid())
    hog = multiprocess.get_context("fork").Process(target=_burn, args=(5,))
    hog.start()
    time.sleep(1.0)
    try:
        assert tree_cpu_seconds(os.getpid()) - tree >= 0.5, "a running child's CPU time is counted"
        assert process_cpu_seconds(os.getpid()) - own < 0.5, "the sleeping parent's is not inflated"
    finally:
        hog.kill()
        hog.join()


def test_tune_measures_every_layout_and_writes_a_config_run_accepts(clip: Path, tmp_path: Path) -> None:
    tuned = tmp_path / "tuned.yaml"
    two_cpus = set(sorted(os.sched_getaffinity(0))[:2])
    assert len(two_cpus) == 2, "the test needs two CPUs"
    result = subprocess.run([sys.executable, "-m", "vidparse", "tune", str(clip), "--seconds", "30", "--config",
                             str(FAST), "--max-workers", "4", "-w", str(tuned)], capture_output=True, text=True,
                            timeout=600, preexec_fn=lambda: os.sched_setaffinity(0, two_cpus),
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert tuned.read_text().startswith(f"# Written by `vidparse tune {clip} --seconds 30 --config {FAST} "
                                        f"--max-workers 4 -w {tuned}` on "), "the command, with its options"
    expected = [Layout(1, 1), Layout(1, 2), Layout(2, 1)]  # what two usable CPUs allow
    rows = re.findall(r"^#\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)%$", tuned.read_text(), re.M)
    assert [Layout(int(w), int(t)) for w, t, *_ in rows] == expected
    assert all(float(fps) > 0 and int(mb) > 50 and 0 < int(cpu) <= 100 for _, _, fps, _, mb, cpu in rows), rows
    fastest = max(float(row[2]) for row in rows)
    as_fast = [row for row in rows if float(row[2]) >= SAME_FPS * fastest - 0.01]  # the table rounds
    least_busy = {(int(w), int(t)) for w, t, *_, cpu in as_fast if int(cpu) <= min(int(row[5]) for row in as_fast) + 1}
    written = load_config(tuned, {})
    assert (written.workers, written.threads) in least_busy, "the pick: of the trials as fast as the fastest, the " \
                                                             "one keeping the CPUs least busy"
    assert written.roi.person_height == 192 and written.temporal.window == 1, "the tuned settings are kept"
    assert result.stdout.count("best") == 1
    assert "ended before the 30 s window in 3 of 3 trials" in " ".join(result.stderr.split()), \
        "the clip's 12 frames end each trial"
    table = re.findall(r"^│\s*(?:best|fastest)?\s*│\s*\d+ │\s*\d+ │\s*([\d.]+) │\s*(\d+) │", result.stdout, re.M)
    assert len(table) == 3 and all(float(fps) <= float(ceiling) for fps, ceiling in table), \
        f"a serial ceiling measured over the same window as the fps bounds it: {table}"
    out = tmp_path / "out.mp4"
    assert run_cli("run", str(clip), "-o", str(out), "--config", str(tuned)).returncode == 0
    assert probe_video(out).frames == 12


def test_a_trial_window_waits_for_two_frames_when_one_takes_longer_than_its_seconds() -> None:
    """A frame slower than --seconds (m2fp on a CPU, a wide crowd) closed the window on its first frame, and the
    trial failed as 'too short' on a long video."""
    stops: list[bool] = []
    window = _Window(warmup_frames=1, seconds=0.0, stop=lambda: stops.append(True))
    for count in (1, 2, 3, 4):
        written = SimpleNamespace(result=SimpleNamespace(timings={"parse": 2.0}))
        window.on_frame(written, SimpleNamespace(frames=count, serial_s={}))  # type: ignore[arg-type]
    assert window.frames == 2 and stops == [True], "closed once, at the second frame after the warm-up"


def test_tune_on_a_too_short_video_says_so(tmp_path: Path) -> None:
    short = cut_clip(VTEST, tmp_path / "short.avi", 3)
    result = run_cli("tune", str(short), "--seconds", "1", "--config", str(FAST), "--max-workers", "1",
                     "-w", str(tmp_path / "t.yaml"))
    assert result.returncode == 3 and "too short" in result.stderr and "Traceback" not in result.stderr
    assert "trials" not in result.stderr, "told from the header's frame count, before any trial ran"
    assert not (tmp_path / "t.yaml").exists()


def test_ctrl_c_stops_tune_without_writing_a_config(shared: Path, tmp_path: Path) -> None:
    tuned = tmp_path / "tuned.yaml"
    process = subprocess.Popen([sys.executable, "-m", "vidparse", "tune", str(VTEST), "--seconds", "60", "--config",
                                str(FAST), "-w", str(tuned)], stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "not written" in stderr and "Traceback" not in stderr
    assert not tuned.exists()


def test_ctrl_c_stops_bench_without_writing_its_table(tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    process = subprocess.Popen([sys.executable, "-m", "vidparse", "bench", str(VTEST), "--frames", "700", "--workers",
                                "1", "--config", str(FAST), "--markdown", str(table)], stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and f"interrupted: {table} not written" in " ".join(stderr.split()), stderr
    assert "Traceback" not in stderr and not table.exists()


def test_the_pick_is_the_fastest_and_among_equals_the_least_busy() -> None:
    """Against a 10 fps camera every layout runs at 10 fps: the one keeping the CPUs least busy is picked."""
    def trial(workers: int, threads: int, fps: float, cpu: float) -> TrialResult:
        return TrialResult(Layout(workers, threads), round(fps * 10), 10.0, 50.0, 500.0, cpu, 2.0)

    capped = [trial(1, 1, 9.9, 0.18), trial(1, 2, 10.1, 0.63), trial(2, 1, 9.9, 0.35)]
    assert best(capped).layout == Layout(1, 1)
    assert best([trial(1, 1, 5.0, 0.5), trial(2, 1, 9.0, 0.95)]).layout == Layout(2, 1), "faster wins"


def test_a_pick_slower_than_the_fastest_is_not_called_the_fastest() -> None:
    """The config's comment called every pick "the fastest of these trials", also the least busy of those within 3%
    of a faster one (a camera's own rate): it now names the fastest and why the pick was preferred."""
    def trial(workers: int, threads: int, fps: float, cpu: float) -> TrialResult:
        return TrialResult(Layout(workers, threads), round(fps * 10), 10.0, 50.0, 500.0, cpu, 2.0)

    capped = [trial(1, 1, 9.9, 0.18), trial(1, 2, 10.1, 0.63), trial(2, 1, 9.9, 0.35)]
    text = tuned_config_text({}, best(capped), capped, "vidparse tune cam", "a machine")
    assert "# Picked 1 worker x 1 thread: 9.90 fps, within 3% of the fastest (1 worker x 2 threads, 10.10 fps) and " \
           "the least busy of those:" in text, text
    fastest = [trial(1, 1, 5.0, 0.5), trial(2, 1, 9.0, 0.95)]
    assert "# Picked 2 workers x 1 thread: 9.00 fps, the fastest of these trials:" in \
           tuned_config_text({}, best(fastest), fastest, "vidparse tune clip.mp4", "a machine")
