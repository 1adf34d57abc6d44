"""`vidparse run` options and signals, each shown to change what it says, end to end on a few frames of vtest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import VTEST, cut_clip, decode_frames, probe_video, run_cli, vtest_h264

FRAMES = 3


def run_ok(*args: str) -> subprocess.CompletedProcess:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def composed(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The first frames written with alpha 0, alpha 0 plus the legend, and alpha 1 (masks kept)."""
    runs = {}
    for name, extra in (("alpha0", ["--alpha", "0", "--no-legend"]), ("legend", ["--alpha", "0", "--legend"]),
                        ("alpha1", ["--alpha", "1", "--no-legend"])):
        out = tmp_path_factory.mktemp(name)
        run_ok("run", str(clip), "-o", str(out / "o.mp4"), "--max-frames", str(FRAMES), "--workers", "1",
               "--model", "bodypix", "--masks", str(out / "masks"), *extra)
        runs[name] = out
    return runs


def labelled(run: Path, seq: int) -> np.ndarray:
    return np.array(Image.open(run / "masks" / f"{seq:06d}.png")) > 0


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).mean(axis=2)


def test_alpha_sets_how_much_class_color_covers_people(composed: dict[str, Path], clip: Path) -> None:
    source = decode_frames(clip)
    for seq in range(FRAMES):
        people = labelled(composed["alpha0"], seq)
        assert people.mean() > 0.005
        clear = difference(decode_frames(composed["alpha0"] / "o.mp4")[seq], source[seq])
        painted = difference(decode_frames(composed["alpha1"] / "o.mp4")[seq], source[seq])
        assert clear[people].mean() < 5, "alpha 0: people keep their pixels (up to encoder noise)"
        assert painted[people].mean() > 30, "alpha 1: people are painted over"
        assert painted[~people].mean() < 5


def test_legend_draws_in_the_top_left_corner_only(composed: dict[str, Path]) -> None:
    plain, legend = decode_frames(composed["alpha0"] / "o.mp4"), decode_frames(composed["legend"] / "o.mp4")
    for a, b in zip(plain, legend):
        changed = difference(a, b) > 20
        assert changed[:40, :100].sum() > 200, "the legend is drawn"
        assert changed[:, 250:].mean() < 0.001, "and nothing else changes (up to encoder noise)"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["m2fp", "m2fp-single"])
def test_m2fp_from_a_random_checkpoint_made_by_the_cli(name: str, clip: Path, tmp_path: Path) -> None:
    model = tmp_path / name
    made = run_ok("models", "make-random", name, str(model), "--tiny")
    assert (model / "configuration.json").exists() and (model / "pytorch_model.pt").exists(), made.stdout
    config = json.loads((model / "configuration.json").read_text())
    assert config, "a ModelScope configuration"
    run_ok("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", name, "--model-dir", str(model),
           "--max-frames", "2", "--workers", "1", "--masks", str(tmp_path / "masks"))
    assert probe_video(tmp_path / "o.mp4").frames == 2
    masks = [np.array(Image.open(p)) for p in sorted((tmp_path / "masks").glob("*.png"))]
    assert len(masks) == 2 and all(m.max() < 20 for m in masks), "CIHP's 20 classes"
    wrong = run_cli("run", str(clip), "-o", str(tmp_path / "w.mp4"), "--model",
                    "m2fp" if name == "m2fp-single" else "m2fp-single", "--model-dir", str(model))
    assert wrong.returncode == 5 and "does not fit" in wrong.stderr, "the variant is checked against the folder"


def test_segmented_output_warns_that_audio_is_not_copied(clip_with_audio: Path, tmp_path: Path) -> None:
    result = run_ok("run", str(clip_with_audio), "-o", str(tmp_path / "o.mp4"), "--segment-seconds", "0.5",
                    "--workers", "1", "--model", "bodypix")
    assert "segmented output: the input's audio is not copied" in result.stderr
    segments = sorted(tmp_path.glob("o_*.mp4"))
    assert len(segments) == 2 and sum(probe_video(p).frames for p in segments) == 8
    assert all(probe_video(p).audio_codec is None for p in segments)


@pytest.mark.slow
def test_parse_every_gives_the_same_masks_with_one_and_two_workers(clip: Path, tmp_path: Path) -> None:
    masks = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        run_ok("run", str(clip), "-o", str(out / "o.mp4"), "--workers", str(workers), "--parse-every", "3", "--model",
               "bodypix",
               "--masks", str(out / "masks"), "--stats", str(out / "stats.jsonl"))
        masks[workers] = [p.read_bytes() for p in sorted((out / "masks").glob("*.png"))]
        carried = [json.loads(line)["carried_from"] for line in (out / "stats.jsonl").read_text().splitlines()]
        assert carried == [None if seq % 3 == 0 else seq - seq % 3 for seq in range(12)]
    assert len(masks[1]) == 12 and masks[1] == masks[2]
    assert len(set(masks[1])) > 4, "the masks change over the clip"


@pytest.mark.slow
def test_a_sigkilled_run_leaves_a_playable_file(shared: Path, tmp_path: Path) -> None:
    clip = cut_clip(VTEST, tmp_path / "vtest40.avi", 40)
    stats, output = tmp_path / "stats.jsonl", tmp_path / "o.mp4"
    process = subprocess.Popen([sys.executable, "-m", "vidparse", "run", str(clip), "-o", str(output), "--stats",
                                str(stats), "--config", str(Path(__file__).with_name("fast.yaml"))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while not (stats.exists() and len(stats.read_text().splitlines()) >= 25):
        assert time.monotonic() < deadline and process.poll() is None, "the run made no progress"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    facts = probe_video(output)
    assert 10 <= facts.frames < 40, "the flushed fragments play"
    assert facts.pts_s == pytest.approx([i / 10 for i in range(facts.frames)])


def test_variable_frame_rate_survives_from_input_to_output(shared: Path, tmp_path: Path) -> None:
    """Frames at irregular times (gaps of 1 to 4 ticks of 1/10 s) come out at the same times."""
    pts = [0, 1, 2, 5, 6, 10]
    source = tmp_path / "vfr.mp4"
    with av.open(str(VTEST)) as src, av.open(str(source), "w") as dst:
        stream = dst.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt, stream.time_base = 768, 576, "yuv420p", Fraction(1, 10)
        stream.codec_context.time_base = Fraction(1, 10)
        for p, frame in zip(pts, src.decode(video=0)):
            frame.pts, frame.time_base = p, Fraction(1, 10)
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))
    assert probe_video(source).pts_s == pytest.approx([p / 10 for p in pts])
    run_ok("run", str(source), "-o", str(tmp_path / "o.mp4"), "--workers", "1", "--model", "bodypix")
    assert probe_video(tmp_path / "o.mp4").pts_s == pytest.approx([p / 10 for p in pts])


def start_and_wait(tmp_path: Path, frames: int) -> tuple[subprocess.Popen, Path]:
    """`vidparse run` on 40 frames of vtest, once ``frames`` frames are written."""
    clip = cut_clip(VTEST, tmp_path / "vtest40.avi", 40)
    stats = tmp_path / "stats.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "vidparse", "run", str(clip), "-o", str(tmp_path / "o.mp4"),
                                "--stats", str(stats), "--config", str(Path(__file__).with_name("fast.yaml"))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while not (stats.exists() and len(stats.read_text().splitlines()) >= frames):
        assert time.monotonic() < deadline and process.poll() is None, "the run made no progress"
        time.sleep(0.05)
    return process, stats


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_drains_and_finalizes_the_file(stop: signal.Signals, tmp_path: Path, shared: Path) -> None:
    process, stats = start_and_wait(tmp_path, 5)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped early" in stderr
    assert f"send {stop.name} again to stop at once" in " ".join(stderr.split()), "not Ctrl-C: it names the signal"
    assert "frames dropped" not in stderr, "frames not started at the stop are not the live policy's drops"
    written = [json.loads(line)["seq"] for line in stats.read_text().splitlines()]
    assert written == list(range(len(written))) and 5 <= len(written) < 40, "frames in flight finished, in order"
    assert probe_video(tmp_path / "o.mp4").frames == len(written)
    data = (tmp_path / "o.mp4").read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "finalized: a fast-start MP4"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGHUP])
def test_a_stop_sent_to_the_process_group_while_the_children_start_is_not_a_crash(stop: signal.Signals,
                                                                                   tmp_path: Path) -> None:
    """A terminal's Ctrl-C (or a closed terminal's SIGHUP) reaches every process of the group, the children too while
    they are still importing: they must leave it to the main process, not die of it as if out of memory. No frame was
    written, so no file is left: not one holding the input's audio alone."""
    import psutil

    clip = vtest_h264(tmp_path / "tone40.mp4", 40, size=(192, 144), tone_hz=440)
    process = subprocess.Popen([sys.executable, "-m", "vidparse", "run", str(clip), "-o", str(tmp_path / "o.mp4"),
                                "--workers", "2", "--config", str(Path(__file__).with_name("fast.yaml"))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(psutil.Process(process.pid).children()) < 2:  # the source and a worker launched, still importing
        assert time.monotonic() < deadline and process.poll() is None, "no child process started"
        time.sleep(0.01)
    os.killpg(process.pid, stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "died" not in stderr and "error:" not in stderr, stderr
    assert not (tmp_path / "o.mp4").exists() and "wrote " not in stderr, stderr
    assert "interrupted before a frame was written: nothing written" in stderr


@pytest.mark.slow
def test_a_second_ctrl_c_stops_without_draining(tmp_path: Path, shared: Path) -> None:
    process, stats = start_and_wait(tmp_path, 5)
    process.send_signal(signal.SIGINT)
    time.sleep(0.1)  # two signals sent together may arrive as one; the drain may end in 0.3 s
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "press Ctrl-C again to stop at once" in stderr
    assert "stopped early" not in stderr, "no draining and no summary: it stopped at once"
    assert stderr.rstrip().endswith("stopped at once"), "and it says so, last"
    assert len(stats.read_text().splitlines()) < 40


@pytest.mark.slow
@pytest.mark.parametrize("workers, threads", [(1, 2), (2, 1)])
def test_each_worker_starts_with_its_share_of_the_cpus(workers: int, threads: int, tmp_path: Path,
                                                       shared: Path) -> None:
    """Two usable CPUs shared by the workers: OpenMP, BLAS and MKL read their thread counts at start-up from the
    environment each worker process was started with."""
    from test_faults import worker_pids

    clip = cut_clip(VTEST, tmp_path / "vtest40.avi", 40)
    two_cpus = set(sorted(os.sched_getaffinity(0))[:2])
    assert len(two_cpus) == 2, "the test needs two CPUs"
    stats = tmp_path / "stats.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "vidparse", "run", str(clip), "-o", str(tmp_path / "o.mp4"),
                                "--workers", str(workers), "--stats", str(stats), "--config",
                                str(Path(__file__).with_name("fast.yaml"))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=lambda: os.sched_setaffinity(0, two_cpus))
    try:
        deadline = time.monotonic() + 120
        while not (stats.exists() and stats.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline and process.poll() is None, "the run made no progress"
            time.sleep(0.05)
        pids = worker_pids(process.pid)
        assert len(pids) == workers
        for pid in pids:
            environment = dict(item.split("=", 1) for item in
                               Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                assert environment.get(name) == str(threads), name
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def test_device_cuda_runs_the_onnx_parser_on_cuda_or_says_why_it_cannot(clip: Path, tmp_path: Path) -> None:
    """--device cuda is never quietly run on the CPU: with ONNX Runtime's CUDA provider the BodyPix run works; without
    it (the plain onnxruntime build) the run stops before any process starts, with one line naming the fix."""
    import onnxruntime

    result = run_cli("run", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "bodypix", "--device", "cuda",
                     "--workers", "1", "--max-frames", "2")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "no CUDAExecutionProvider" in error and "hint: install onnxruntime-gpu" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("model", ["m2fp", "m2fp-single"])
def test_device_cuda_runs_m2fp_on_cuda_or_says_why_it_cannot(model: str, shared: Path, tmp_path: Path) -> None:
    """The same for M2FP's PyTorch backend: without CUDA in PyTorch the run stops before any worker starts."""
    import torch

    from vidparse.stages.parsers.m2fp import make_random_checkpoint

    checkpoint = make_random_checkpoint(tmp_path / model, tiny=True, single_human=model == "m2fp-single")
    output = tmp_path / "out.png"
    result = run_cli("run", str(shared / "data" / "photos" / "messi5.jpg"), "-o", str(output), "--model", model,
                     "--model-dir", str(checkpoint), "--device", "cuda", "--workers", "1")
    if torch.cuda.is_available():
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "--device cuda: this PyTorch" in error and "hint: " in result.stderr and "--device cpu" in result.stderr
    assert "worker" not in result.stderr and not output.exists()
