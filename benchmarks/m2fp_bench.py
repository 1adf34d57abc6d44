"""M2FP on CPU: ModelScope's own eager forward vs ours (eager, ONNX Runtime, INT8, sampler, ROI packing).

Every case runs in its own process (clean peak RSS) on the same weights and the same vtest frame:

    python benchmarks/m2fp_bench.py [--model-dir DIR] [--threads 2] [--repeats 3] [--markdown /tmp/m2fp.md]

Without --model-dir a random ResNet-101 checkpoint in ModelScope's format is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIDPARSE_SHARED", REPO.parent / "shared"))
ROI_MARGIN = 0.15

# name -> (implementation, input, settings)
CASES: dict[str, tuple[str, str, dict]] = {
    "modelscope-640": ("modelscope", "640", {}),
    "eager-gridsample-640": ("ours", "640", {"sampler": "grid_sample"}),
    "eager-640": ("ours", "640", {}),
    "eager-int8-640": ("ours", "640", {"int8": True}),
    "onnx-640": ("ours", "640", {"backend": "onnx"}),
    "onnx-int8-640": ("ours", "640", {"backend": "onnx", "int8": True}),
    "modelscope-512": ("modelscope", "512", {}),
    "eager-512": ("ours", "512", {}),
    "eager-int8-512": ("ours", "512", {"int8": True}),
    "onnx-512": ("ours", "512", {"backend": "onnx"}),
    "eager-roi256": ("ours", "roi256", {}),
    "eager-gridsample-roi128": ("ours", "roi128", {"sampler": "grid_sample"}),
    "eager-roi128": ("ours", "roi128", {}),
    "eager-int8-roi128": ("ours", "roi128", {"int8": True}),
    "onnx-roi128": ("ours", "roi128", {"backend": "onnx"}),
    "onnx-int8-roi128": ("ours", "roi128", {"backend": "onnx", "int8": True}),
}
REFERENCE = {"640": "eager-640", "512": "eager-512", "roi256": "eager-roi256", "roi128": "eager-roi128"}


def read_frame(video: Path, index: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    if not ok:
        sys.exit(f"cannot read frame {index} of {video}")
    return frame


def detect(frame: np.ndarray, threads: int) -> tuple[np.ndarray, float]:
    from vidparse.stages.detect import DetectorOptions, PersonDetector

    detector = PersonDetector(SHARED / "models/fastestdet/FastestDet.onnx", DetectorOptions(0.5, 0.45, 16), threads)
    detector.open()
    detector.process(frame)
    start = time.perf_counter()
    boxes = detector.process(frame).boxes
    return boxes, time.perf_counter() - start


def case_images(frame: np.ndarray, boxes: np.ndarray, kind: str) -> list[np.ndarray]:
    from vidparse.stages.roi import crop_person

    if kind == "640":
        scale = 640 / min(frame.shape[:2])
        return [cv2.resize(frame, (round(frame.shape[1] * scale), 640), interpolation=cv2.INTER_LINEAR)]
    if kind == "512":
        return [cv2.resize(frame, (512, 512), interpolation=cv2.INTER_LINEAR)]
    height = int(kind.removeprefix("roi"))
    return [crop_person(frame, box, ROI_MARGIN, height).image for box in boxes]


def network_input(images: list[np.ndarray]):
    from vidparse.stages.parsers.m2fp.parser import pad_to_multiple, to_tensor
    from vidparse.stages.roi import pack

    canvas, _ = pack(images, align=1)
    return to_tensor([pad_to_multiple(canvas)])


def timed(fn, repeats: int) -> tuple[float, object]:
    """Fastest of ``repeats`` runs after a warm-up: the machine is shared, and the minimum is least disturbed."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def run_case(name: str, work: Path, model_dir: Path, repeats: int) -> dict:
    import torch

    impl, kind, settings = CASES[name]
    data = np.load(work / "frame.npz")
    images = case_images(data["frame"], data["boxes"], kind)
    batch = network_input(images)
    row = {"case": name, "input": f"{batch.shape[2]}x{batch.shape[3]}", "pixels": int(batch.shape[2] * batch.shape[3])}
    if impl == "modelscope":
        sys.path.insert(0, str(REPO / "tests"))
        from modelscope_m2fp import build_modelscope_m2fp

        from vidparse.stages.parsers.m2fp.checkpoint import read_state_dict
        from vidparse.stages.parsers.m2fp.config import read_config

        model = build_modelscope_m2fp(read_config(model_dir).to_model_section(), model_dir)
        model.load_state_dict(read_state_dict(model_dir / "pytorch_model.pt"), strict=True)
        inputs = {"batched_inputs": [{"image": batch[0]}]}
        with torch.no_grad():
            row["forward_s"], out = timed(lambda: model.forward(inputs), repeats)
            row["total_s"], _ = timed(lambda: model(inputs), 1)
        masks = out["outputs"]["pred_masks"]
    else:
        from vidparse.stages.parsers.m2fp import Options, create
        from vidparse.stages.parsers.m2fp.deform_attn import use_sampler

        options = Options(backend=settings.get("backend", "eager"), int8=settings.get("int8", False),
                          onnx_cache=str(work / "onnx"))
        parser = create("m2fp", options, model_dir, "cpu", torch.get_num_threads())
        parser.open()
        if "sampler" in settings:
            use_sampler(parser.runner.model, settings["sampler"])
        row["forward_s"], (_, masks) = timed(lambda: parser.runner(batch), repeats)
        row["total_s"], labels = timed(lambda: parser.parse(images), repeats)
        np.save(work / f"{name}-labels.npy", np.concatenate([lab.ravel() for lab in labels]))
    np.save(work / f"{name}-masks.npy", masks.float().numpy())
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def drift(work: Path, name: str) -> str:
    kind = CASES[name][1]
    reference = REFERENCE[kind]
    if name == reference:
        return "reference"
    masks, ref_masks = np.load(work / f"{name}-masks.npy"), np.load(work / f"{reference}-masks.npy")
    diff = np.abs(masks - ref_masks)
    text = f"mask logits: max abs diff {diff.max():.2g}, mean {diff.mean():.2g}"
    labels_path = work / f"{name}-labels.npy"
    if labels_path.exists():
        agreement = (np.load(labels_path) == np.load(work / f"{reference}-labels.npy")).mean()
        text += f", labels {100 * agreement:.2f}% equal"
    return text


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import onnxruntime
    import torch

    return (f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}; Python "
            f"{platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")


def table(rows: list[dict], work: Path, detect_s: float) -> str:
    base = next(r for r in rows if r["case"] == "modelscope-640")["forward_s"]
    lines = ["| case | network input | pixels | forward s/frame | parse s/frame | speed-up vs ModelScope-640 forward | "
             "peak RSS MiB | drift vs our eager fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        total = r["total_s"] + (detect_s if "roi" in r["case"] else 0.0)
        lines.append(f"| {r['case']} | {r['input']} | {r['pixels']:,} | {r['forward_s']:.2f} | {total:.2f} | "
                     f"{base / total:.2f}x | {r['peak_rss_mib']:.0f} | {drift(work, r['case'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--video", type=Path, default=SHARED / "data/video/vtest.avi")
    parser.add_argument("--frame", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES),
                        help="cases to time; modelscope-640 (the speed-ups' base) and each case's reference are added")
    parser.add_argument("--markdown", type=Path, help="write the table and machine description here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    wanted = args.cases.split(",")
    if unknown := [name for name in wanted if name not in CASES]:
        parser.error(f"unknown case {unknown[0]}; the cases: {', '.join(CASES)}")
    cases = list(dict.fromkeys(["modelscope-640", *(REFERENCE[CASES[name][1]] for name in wanted), *wanted]))

    import torch

    torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args.work, args.model_dir, args.repeats)))
        return
    with tempfile.TemporaryDirectory(prefix="m2fp-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir
        if model_dir is None:
            from vidparse.stages.parsers.m2fp import make_random_checkpoint

            model_dir = make_random_checkpoint(work / "m2fp-r101")
        frame = read_frame(args.video, args.frame)
        boxes, detect_s = detect(frame, args.threads)
        np.savez(work / "frame.npz", frame=frame, boxes=boxes)
        print(f"frame {args.frame} of {args.video.name}: {frame.shape[1]}x{frame.shape[0]}, {len(boxes)} persons, "
              f"detection {detect_s * 1000:.0f} ms", flush=True)
        rows = []
        for name in cases:
            command = [sys.executable, __file__, "--case", name, "--work", str(work), "--model-dir", str(model_dir),
                       "--threads", str(args.threads), "--repeats", str(args.repeats)]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode:
                sys.exit(f"case {name} failed:\n{result.stderr[-3000:]}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
        text = table(rows, work, detect_s)
        print(text)
        if args.markdown:
            command = "python benchmarks/m2fp_bench.py " + " ".join(sys.argv[1:])
            args.markdown.write_text(
                f"<!-- generated by benchmarks/m2fp_bench.py -->\nMachine: {machine()}; {args.threads} threads.\n\n"
                f"Command: `{command}`\n\nFrame {args.frame} of vtest.avi, {len(boxes)} persons detected "
                f"(FastestDet, {detect_s * 1000:.0f} ms, added to the ROI rows' parse time).\n\n{text}\n")


if __name__ == "__main__":
    main()
