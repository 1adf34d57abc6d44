"""Keyframe mode: throughput and agreement for `--parse-every K`.

Runs the real pipeline on the first frames of a video once per K (K = 1 is every frame parsed) and per DIS flow
preset, keeps the label maps (the temporal vote is switched off so the maps are the parser's or the flow's own),
and compares each carried label map with the directly parsed map of the same frame: mIoU over the body-part
classes and IoU of person versus background, from one confusion matrix over all carried frames. Keyframes must be
identical to the direct parse; the script checks it. Prints a Markdown table; docs/keyframes.md holds a run.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/keyframes.py ../shared/data/video/vtest.avi --frames 150
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vidparse.bench import machine_description, scratch_runner
from vidparse.config import load_config
from vidparse.evaluation.metrics import iou_per_class
from vidparse.pipeline.stats import RunStats

log = logging.getLogger("keyframes")


def parse_run(video: str, frames: int, overrides: dict, config: Path | None, masks: Path) -> RunStats:
    settings = load_config(config, {"temporal.window": 1, **overrides})
    with scratch_runner(settings, video, settings.worker_count, settings.threads, masks_dir=masks,
                        max_frames=frames) as runner:
        return runner.run()


def read_mask(directory: Path, seq: int) -> np.ndarray:
    return np.array(Image.open(directory / f"{seq:06d}.png"))


def agreement(direct: Path, carried: Path | None, frames: int, every: int, classes: int) -> tuple[float, float, bool]:
    """(part mIoU, person IoU) of the frames between keyframes against the direct parse, and whether keyframes are
    identical. ``carried`` None: the keyframe's own parse held unchanged (no flow), the baseline flow must beat."""
    parts = np.zeros((classes, classes), np.int64)
    person = np.zeros((2, 2), np.int64)
    keyframes_equal = True
    for seq in range(frames):
        truth = read_mask(direct, seq)
        labels = read_mask(carried, seq) if carried else read_mask(direct, seq - seq % every)
        if seq % every == 0:
            keyframes_equal &= bool(np.array_equal(truth, labels))
            continue
        parts += np.bincount(truth.ravel().astype(np.int64) * classes + labels.ravel(),
                             minlength=classes * classes).reshape(classes, classes)
        person += np.bincount((truth.ravel() != 0) * 2 + (labels.ravel() != 0), minlength=4).reshape(2, 2)
    part_iou = iou_per_class(parts)[1:]
    return float(np.nanmean(part_iou)), float(iou_per_class(person)[1]), keyframes_equal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--every", default="1,2,3,5", help="comma-separated K values; 1 is the reference")
    parser.add_argument("--presets", default="ultrafast,fast", help="DIS presets to measure for K > 1")
    parser.add_argument("--config", type=Path, help="vidparse config file or preset name (default: the defaults)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    every = sorted({1, *(int(k) for k in args.every.split(","))})
    presets = args.presets.split(",")
    classes = 25  # BodyPix: background and 24 parts
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidparse-keyframes-") as scratch:
        direct = Path(scratch) / "k1"
        reference = parse_run(args.video, args.frames, {}, args.config, direct)
        log.info("K=1: %.2f fps", reference.steady_fps)
        rows.append(f"| 1 (every frame) | - | {reference.steady_fps:.2f} | {reference.fps:.2f} | 1.00x | 100 | 100 "
                    "| - |")
        for k in every[1:]:
            held_parts, held_person, _ = agreement(direct, None, args.frames, k, classes)
            rows.append(f"| {k} | none: keyframe labels held | - | - | - | {100 * held_parts:.1f} | "
                        f"{100 * held_person:.1f} | - |")
            for preset in presets:
                masks = Path(scratch) / f"k{k}-{preset}"
                keyframes = {"keyframes.parse_every": k, "keyframes.flow_preset": preset}
                stats = parse_run(args.video, args.frames, keyframes, args.config, masks)
                part_miou, person_iou, same = agreement(direct, masks, args.frames, k, classes)
                carry_ms = stats.stage_s.get("propagate", 0.0) / max(1, args.frames - args.frames // k) * 1000
                log.info("K=%d %s: %.2f fps, part mIoU %.1f, person IoU %.1f", k, preset, stats.steady_fps,
                         100 * part_miou, 100 * person_iou)
                if not same:
                    log.error("K=%d %s: keyframes differ from the direct parse", k, preset)
                    return 1
                rows.append(f"| {k} | {preset} | {stats.steady_fps:.2f} | {stats.fps:.2f} | "
                            f"{stats.steady_fps / reference.steady_fps:.2f}x | {100 * part_miou:.1f} | "
                            f"{100 * person_iou:.1f} | {carry_ms:.1f} |")
    print(f"machine: {machine_description()}\n")
    print(f"first {args.frames} frames of `{Path(args.video).name}`, config `{args.config or 'defaults'}`, "
          "temporal vote off\n")
    print("| K (parse every) | flow preset | fps (steady) | fps (with start-up) | speed-up | part mIoU vs direct | "
          "person IoU vs direct | carry ms/frame |\n|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
