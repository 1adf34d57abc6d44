"""One prepared run on a machine with a GPU and many cores: the M2FP GPU path and CPU worker scaling.

Parts, each in its own process with its own time limit (a part that fails or runs out of time is recorded and
the next one runs):

- ``env``: the machine (GPU, CPU, usable CPUs, versions);
- ``checkpoint``: random ResNet-101 M2FP weights in ModelScope's format (``make_random_checkpoint``);
- ``gpu``: our M2FP network (``--model m2fp`` with ``--device``) on vtest frames resized to 640x853: forward fps at
  batch 1 and 8, fp32 and bf16 (CUDA events after a warm-up, median of several runs), a batch-1 ``parse``, and the
  drift of the GPU logits against the CPU's (fp32) and fp32's (bf16);
- ``modelscope``: ModelScope's own M2FP class on the same device, weights and inputs;
- ``pipeline``: ``vidparse run --model m2fp --device ...`` end to end on a few frames (worker processes on the GPU);
- ``bench``: ``vidparse bench VIDEO --frames K --workers 1,2,4,8,16 --threads 1`` (its ``run_trial`` per worker
  count, stopping before a trial that would not fit the time left);
- ``tune``: ``vidparse tune VIDEO --seconds S`` (its layouts and ``run_trial``; layouts that fill every CPU first,
  so a cut leaves out the least likely picks).

Writes ``device_check.md`` (tables) and ``device_check.json`` (raw numbers) into ``--out``.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/device_check.py --out /tmp/dc --video vtest.avi
    ... --smoke --device cpu   # every code path in about two minutes on a laptop: tiny model, a few frames
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REFERENCE_H100 = {("fp32", 1): 30.0, ("bf16", 8): 73.0}  # fps measured earlier on an H100 (issue 22)
PARTS = ("env", "checkpoint", "gpu", "modelscope", "pipeline", "bench", "tune")
# seconds each part may take at most
CAPS = {"env": 60, "checkpoint": 60, "gpu": 90, "modelscope": 75, "pipeline": 60, "bench": 150, "tune": 150}
FRAME_SIZE = (853, 640)  # width, height: vtest's 768x576 with the short side at 640, as ModelScope resizes
SMOKE_FRAME_SIZE = (213, 160)


def read_frames(video: Path, count: int, size: tuple[int, int]) -> list[Any]:
    import cv2

    capture, frames = cv2.VideoCapture(str(video)), []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        for _ in range(9):  # every 10th frame: different people, different places
            capture.grab()
        frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR))
    capture.release()
    if len(frames) < count:
        raise RuntimeError(f"{video}: only {len(frames)} of {count} frames")
    return frames


def network_batch(frames: list[Any], device: str):
    from vidparse.stages.parsers.m2fp.parser import pad_to_multiple, to_tensor

    return to_tensor([pad_to_multiple(f) for f in frames]).to(device)


def timed(fn, device: str, warmup: int, iterations: int) -> list[float]:
    """Seconds per call: CUDA events on a GPU, the host clock after a synchronisation elsewhere."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return times


def drift(ours, reference) -> float:
    return float((ours.float().cpu() - reference.float().cpu()).abs().mean() / reference.float().cpu().abs().mean())


def speed(times: list[float], batch: int) -> dict[str, float]:
    median = statistics.median(times)
    return {"median_ms": median * 1000, "min_ms": min(times) * 1000, "max_ms": max(times) * 1000,
            "fps": batch / median, "runs": len(times)}


def part_env(args: argparse.Namespace) -> dict:
    from vidparse.bench import machine_description

    env: dict[str, Any] = {"machine": machine_description(), "python": platform.python_version()}
    for name in ("torch", "numpy", "onnxruntime", "opencv-python-headless", "av", "multiprocess", "typer",
                 "modelscope"):
        try:
            env[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # a missing package is a finding, not a failure here
            env[name] = "missing"
    shm = shutil.disk_usage("/dev/shm") if Path("/dev/shm").exists() else None
    env["dev_shm_free_gib"] = shm.free / 2**30 if shm else None  # the frame slots live there
    env["nvidia_smi"] = subprocess.run(
        "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader",
        shell=True, capture_output=True, text=True, check=False).stdout.strip()
    save(args.work / "env.partial.json", env)  # kept should torch fail to import
    import torch

    env.update(cuda_available=torch.cuda.is_available(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
               matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return env


def part_checkpoint(args: argparse.Namespace) -> dict:
    from vidparse.stages.parsers.m2fp import make_random_checkpoint

    folder = make_random_checkpoint(args.work / "m2fp", tiny=args.smoke)
    size = sum(f.stat().st_size for f in folder.iterdir())
    return {"folder": str(folder), "layout": "tiny" if args.smoke else "ResNet-101", "mib": size / 2**20}


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


def forward_rows(args: argparse.Namespace, part: str, result: dict, precision: str, make_forward) -> bool:
    """Forward fps at each batch size in ``precision`` (``make_forward(batch)`` returns the call to time), saved as
    they come; a failure is recorded as one line under ``errors`` and the part goes on. True if all ran."""
    import torch

    try:
        for batch in args.batches:
            forward = make_forward(batch)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            row = {"precision": precision, "batch": batch, "what": "forward",
                   **speed(timed(forward, args.device, args.warmup, args.iterations), batch)}
            if args.device == "cuda":
                row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            save(args.work / f"{part}.partial.json", result)
    except Exception as exc:  # e.g. an op without a bf16 kernel: the other precision still counts
        result.setdefault("errors", {})[precision] = one_line(exc)
        print(f"{part} {precision}: {result['errors'][precision]}", flush=True)
        return False
    return True


def part_gpu(args: argparse.Namespace) -> dict:
    import torch

    from vidparse.stages.parsers.m2fp import Options, create

    frames = read_frames(args.video, max(args.batches), args.frame_size)
    result: dict[str, Any] = {"input": f"{args.frame_size[1]}x{args.frame_size[0]} (padded to a multiple of 32)",
                              "rows": []}
    logits = {}
    for precision in ("fp32", "bf16"):
        options = Options(input_short_side=args.frame_size[1], precision=precision)
        parser = create("m2fp", options, args.work / "m2fp", args.device, args.cpu_threads)
        parser.open()

        def make_forward(batch, parser=parser):
            images = network_batch(frames[:batch], args.device)
            return lambda: parser.runner(images)

        if forward_rows(args, "gpu", result, precision, make_forward):
            logits[precision] = parser.runner(network_batch(frames[:1], args.device))
            row = {"precision": precision, "batch": 1, "what": "parse (pre + forward + post, labels on the host)",
                   **speed(timed(lambda: parser.parse(frames[:1]), args.device, args.warmup,  # noqa: B023 - timed now
                                 args.iterations), 1)}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
        parser.close()
    if "bf16" in logits and "fp32" in logits:
        result["bf16_vs_fp32_mask_drift"] = drift(logits["bf16"][1], logits["fp32"][1])
        result["bf16_vs_fp32_class_drift"] = drift(logits["bf16"][0], logits["fp32"][0])
    if "fp32" in logits:
        torch.save({"class": logits["fp32"][0].float().cpu(), "mask": logits["fp32"][1].float().cpu()},
                   args.work / "ours-fp32-batch1.pt")
        if args.device != "cpu" or args.smoke:  # the same network on the CPU: does the GPU compute the same?
            cpu = create("m2fp", Options(input_short_side=args.frame_size[1]), args.work / "m2fp", "cpu",
                         args.cpu_threads)
            cpu.open()
            cpu_logits = cpu.runner(network_batch(frames[:1], "cpu"))
            result["gpu_vs_cpu_fp32_mask_drift"] = drift(logits["fp32"][1], cpu_logits[1])
            result["gpu_vs_cpu_fp32_class_drift"] = drift(logits["fp32"][0], cpu_logits[0])
    return result


def part_modelscope(args: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from modelscope_m2fp import build_modelscope_m2fp

    from vidparse.stages.parsers.m2fp.checkpoint import read_state_dict
    from vidparse.stages.parsers.m2fp.config import read_config

    folder = args.work / "m2fp"
    model = build_modelscope_m2fp(read_config(folder).to_model_section(), folder)
    model.load_state_dict(read_state_dict(folder / "pytorch_model.pt"), strict=True)
    model = model.to(args.device).eval()
    frames = read_frames(args.video, max(args.batches), args.frame_size)
    result: dict[str, Any] = {"rows": []}
    ours_path = args.work / "ours-fp32-batch1.pt"
    if ours_path.exists():  # same weights, same input: ModelScope's logits against ours
        ours = torch.load(ours_path)
        with torch.no_grad():
            out = model.forward({"batched_inputs": [{"image": network_batch(frames[:1], args.device)[0]}]})["outputs"]
        result["vs_ours_fp32_mask_drift"] = drift(out["pred_masks"], ours["mask"])
        result["vs_ours_fp32_class_drift"] = drift(out["pred_logits"], ours["class"])
    for precision in ("fp32", "bf16"):

        def make_forward(batch, precision=precision):
            inputs = {"batched_inputs": [{"image": image} for image in network_batch(frames[:batch], args.device)]}

            def forward():
                with torch.no_grad(), torch.autocast(args.device, torch.bfloat16, enabled=precision == "bf16"):
                    return model.forward(inputs)["outputs"]

            return forward

        forward_rows(args, "modelscope", result, precision, make_forward)
    return result


def part_pipeline(args: argparse.Namespace) -> dict:
    frames = 4 if args.smoke else 30
    out = args.work / "pipeline"
    out.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "vidparse", "run", str(args.video), "-o", str(out / "m2fp.mp4"), "--model",
               "m2fp", "--model-dir", str(args.work / "m2fp"), "--device", args.device, "--workers", "1",
               "--max-frames", str(frames), "--stats", str(out / "stats.jsonl")]
    begin = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    stats = (out / "stats.jsonl").read_text().splitlines() if (out / "stats.jsonl").exists() else []
    persons = sum(len(json.loads(line)["persons"]) for line in stats)
    result = {"command": " ".join(["vidparse", *command[3:]]), "exit": run.returncode,
              "wall_s": time.perf_counter() - begin, "frames_written": len(stats), "persons": persons,
              "output_tail": (run.stdout + run.stderr)[-1500:]}
    if run.returncode or len(stats) != frames:
        raise RuntimeError(f"exit {run.returncode}, {len(stats)} of {frames} frames: {result['output_tail'][-600:]}")
    return result


def save(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, default=str))


def part_bench(args: argparse.Namespace) -> dict:
    from vidparse.bench import markdown_table, run_trial, scaling
    from vidparse.config import load_config

    settings = load_config(None, {})
    trials, skipped, last = [], [], None
    result: dict[str, Any] = {"model": settings.model, "frames": args.bench_frames, "threads": 1}
    for workers in args.bench_workers:
        if last is not None:  # next trial's time: the last one's, scaled by the worker count, at 70% efficiency
            guess = last[0].stats.startup_s + (last[1] - last[0].stats.startup_s) * last[0].workers / workers / 0.7
            if time.time() + guess > args.deadline:
                skipped.append(workers)
                continue
        begin = time.perf_counter()
        trial = run_trial(settings, str(args.video), args.bench_frames, workers, 1)
        last = (trial, time.perf_counter() - begin)
        trials.append(trial)
        result["trials"] = [{"workers": t.workers, "threads": t.threads, "fps": t.stats.steady_fps,
                             "frames": t.stats.frames, "wall_s": t.stats.wall_s, "startup_s": t.stats.startup_s,
                             "speedup": s, "efficiency": e, "stage_ms": {k: t.stage_ms(k) for k in t.stats.stage_s}}
                            for t, (s, e) in zip(trials, scaling(trials))]
        print(json.dumps(result["trials"][-1]), flush=True)
        save(args.work / "bench.partial.json", result)  # a kill still leaves the trials done
    result["skipped_workers"] = skipped
    result["table"] = markdown_table(trials, settings.model, args.video.name, args.bench_frames)
    return result


def part_tune(args: argparse.Namespace) -> dict:
    from vidparse.config import config_from, user_settings
    from vidparse.errors import BadInputError
    from vidparse.pipeline.cpus import usable_cpus
    from vidparse.tune import best, layouts, run_trial

    chosen = user_settings(None, {})
    settings = config_from(chosen)
    cpus = usable_cpus()
    grid = sorted(layouts(cpus, args.tune_max_workers), key=lambda layout: layout.workers * layout.threads != cpus)
    results, skipped = [], []
    for layout in grid:
        if results and time.time() + args.tune_seconds + 15 > args.deadline:
            skipped.append(str(layout))
            continue
        try:
            r = run_trial(settings, str(args.video), layout, args.tune_seconds, cpus)
        except BadInputError as exc:  # too few frames in the window: this layout is too slow to count
            skipped.append(f"{layout} ({exc})")
            continue
        results.append(r)
        print(f"tune {layout}: {r.fps:.2f} fps", flush=True)
    pick = best(results)
    return {"cpus": cpus, "seconds": args.tune_seconds, "model": settings.model, "pick": str(pick.layout),
            "pick_fps": pick.fps, "skipped": skipped,
            "trials": [{"workers": r.layout.workers, "threads": r.layout.threads, "fps": r.fps,
                        "p95_frame_ms": r.p95_frame_ms, "peak_mb": r.peak_mb, "cpu_share": r.cpu_share,
                        "startup_s": r.startup_s} for r in results]}


def gpu_table(gpu: dict, modelscope: dict) -> str:
    def cell(row: dict | None, key: str, spec: str = ".1f") -> str:
        return format(row[key], spec) if row and key in row else "-"

    ours = {(r["precision"], r["batch"], r["what"]): r for r in gpu.get("rows", [])}
    theirs = {(r["precision"], r["batch"], r["what"]): r for r in modelscope.get("rows", [])}
    lines = ["| precision | batch | what | ours fps | ours median ms | ours peak GPU MiB | ModelScope fps | "
             "ModelScope peak GPU MiB | H100 reference fps |", "|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(set(ours) | set(theirs), key=lambda k: (k[0] != "fp32", k[2] != "forward", k[1])):
        o, t = ours.get(key), theirs.get(key)
        reference = REFERENCE_H100.get(key[:2]) if key[2] == "forward" else None
        lines.append(f"| {' | '.join(map(str, key))} | {cell(o, 'fps')} | {cell(o, 'median_ms')} | "
                     f"{cell(o, 'peak_gpu_mib', '.0f')} | {cell(t, 'fps')} | {cell(t, 'peak_gpu_mib', '.0f')} | "
                     f"{reference or '-'} |")
    return "\n".join(lines)


def report(results: dict, args: argparse.Namespace) -> str:
    env, gpu, ms = (results.get(p, {}) for p in ("env", "gpu", "modelscope"))
    out = [f"# device_check ({'smoke, ' if args.smoke else ''}device {args.device})", "",
           f"Machine: {env.get('machine', '?')}; GPU: {env.get('nvidia_smi') or 'none'}; "
           f"Python {env.get('python', '?')}, torch {env.get('torch', '?')} (cuDNN TF32 "
           f"{env.get('cudnn_allow_tf32')}, matmul TF32 {env.get('matmul_allow_tf32')}); /dev/shm free "
           f"{env.get('dev_shm_free_gib') or 0:.1f} GiB.", "",
           f"Command: `python benchmarks/device_check.py {' '.join(sys.argv[1:])}`", "",
           "## Failures", ""]
    failed = [f"- {p}: {results[p]['error']}" for p in PARTS if "error" in results.get(p, {})]
    failed += [f"- {p} {precision}: {error}" for p in ("gpu", "modelscope")
               for precision, error in results.get(p, {}).get("errors", {}).items()]
    out += (failed or ["none"]) + ["", "## M2FP on the device (random ResNet-101 weights)", ""]
    if "rows" in gpu:
        out += [f"Input {gpu['input']}; {args.warmup} warm-up runs, median of {args.iterations}. Drift (mean abs "
                f"difference / mean abs): bf16 vs fp32 masks {gpu.get('bf16_vs_fp32_mask_drift', float('nan')):.2g}, "
                f"GPU vs CPU fp32 masks {gpu.get('gpu_vs_cpu_fp32_mask_drift', float('nan')):.2g}, ModelScope vs ours "
                f"masks {ms.get('vs_ours_fp32_mask_drift', float('nan')):.2g}.", "", gpu_table(gpu, ms), ""]
    pipe = results.get("pipeline", {})
    if "exit" in pipe:
        out += [f"Pipeline: `{pipe['command']}`: exit {pipe['exit']}, {pipe['frames_written']} frames, "
                f"{pipe['persons']} persons, {pipe['wall_s']:.1f} s wall.", ""]
    bench = results.get("bench", {})
    out += ["## CPU scaling (`vidparse bench`)", "", bench.get("table", "not measured"),
            f"Worker counts left out for time: {bench.get('skipped_workers') or 'none'}.", ""]
    tune = results.get("tune", {})
    if "pick" in tune:
        out += ["## `vidparse tune`", "", f"{tune['cpus']} usable CPUs, {tune['seconds']} s a trial, model "
                f"{tune['model']}: pick **{tune['pick']}** at {tune['pick_fps']:.2f} fps. Layouts left out: "
                f"{', '.join(tune['skipped']) or 'none'}.", "", "| workers | threads | fps | p95 frame ms | peak MB | "
                "CPU busy | start-up s |", "|---|---|---|---|---|---|---|"]
        out += [f"| {t['workers']} | {t['threads']} | {t['fps']:.2f} | {t['p95_frame_ms']:.0f} | {t['peak_mb']:.0f} | "
                f"{t['cpu_share']:.0%} | {t['startup_s']:.1f} |" for t in tune["trials"]]
    return "\n".join(out) + "\n"


def run_part(name: str, args: argparse.Namespace, end: float) -> dict:
    """``name`` in a child process, killed at ``end``; its JSON result, or the error as one line."""
    limit = end - time.time()
    if limit < 5:
        print(f"== {name}: not run, the budget is spent", flush=True)
        return {"error": "not run: the budget is spent"}
    command = [sys.executable, __file__, "--part", name, "--deadline", str(end), *sys.argv[1:]]
    begin = time.perf_counter()
    print(f"== {name} (at most {limit:.0f} s)", flush=True)
    child = subprocess.Popen(command, start_new_session=True)  # its own group: worker processes go with it
    try:
        code = child.wait(timeout=limit)
        error = None if code == 0 else f"exit {code}"
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        error = f"killed after {limit:.0f} s"
    result: dict[str, Any] = {}
    for path in (args.work / f"{name}.partial.json", args.work / f"{name}.json"):  # what was done, then the end
        if path.exists():
            result.update(json.loads(path.read_text()))
    if error:
        result["error"] = result.get("error") or error
    result["part_s"] = time.perf_counter() - begin
    print(f"== {name}: {'failed: ' + result['error'] if error else 'ok'} ({result['part_s']:.0f} s)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--video", type=Path, default=REPO.parent / "shared/data/video/vtest.avi")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--smoke", action="store_true", help="tiny model, few frames and runs: checks every path")
    parser.add_argument("--budget", type=float, default=390, help="seconds for everything")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--cap-factor", type=float, default=1, help="scale each part's time limit (slow machines)")
    parser.add_argument("--bench-frames", type=int, default=100)
    parser.add_argument("--bench-workers", default="1,2,4,8,16")
    parser.add_argument("--tune-seconds", type=float, default=2)
    parser.add_argument("--tune-max-workers", type=int)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batches = [1, 2] if args.smoke else [1, 8]
    args.warmup, args.iterations = (1, 2) if args.smoke else (3, 10)
    args.frame_size = SMOKE_FRAME_SIZE if args.smoke else FRAME_SIZE
    args.bench_workers = [int(w) for w in args.bench_workers.split(",")]
    args.cpu_threads = len(os.sched_getaffinity(0))
    if args.part:  # a child: one part, its result as JSON in the work folder
        try:
            save(args.work / f"{args.part}.json", globals()[f"part_{args.part}"](args))
        except Exception as exc:
            save(args.work / f"{args.part}.json", {"error": one_line(exc)})
            raise
        return
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    results: dict[str, Any] = {"argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="device-check-") as work:
        args.work = Path(work)
        sys.argv += ["--work", work]
        for name in args.parts.split(","):
            end = min(time.time() + CAPS[name] * args.cap_factor, start + args.budget)
            results[name] = run_part(name, args, end)
            save(args.out / "device_check.json", results)
    sys.argv = sys.argv[:-2]
    results["total_s"] = time.time() - start
    save(args.out / "device_check.json", results)
    text = report(results, args)
    (args.out / "device_check.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
