"""Tracking: presence flicker, consecutive-frame agreement and the fps cost of `tracking.enabled`.

Quality: parses the first frames of a video once, every frame (K = 1), with the stage `vidparse run` uses, then
writes them per frame and as `vidparse run` does (the vote, tracking) and measures each as `vidparse eval-video`
does. ``--cache FILE.npz`` keeps the parse for the next run (parsing is the slow part).

Speed: the real pipeline on the first ``--fps-frames`` frames with tracking off and on, alternated ``--rounds``
times back to back (the machine may be shared), plus the tracking stage's own time per frame on the parsed frames.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/tracking.py ../shared/data/video/vtest.avi --frames 300 \
        --model bodypix --cache vtest300.npz
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vidparse.batch.manifest import config_hash
from vidparse.bench import machine_description, scratch_runner
from vidparse.config import Config, load_config
from vidparse.evaluation.runs import parsed_frames, video_modes, video_rows
from vidparse.jobs import ResolvedModels
from vidparse.stages.labels import load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.source import VideoSource
from vidparse.stages.temporal import TemporalOptions
from vidparse.stages.track_labels import TrackLabels
from vidparse.stages.tracker import TrackingOptions
from vidparse.stages.types import FrameResult, PersonStats

Parsed = list[tuple[np.ndarray, np.ndarray, FrameResult]]


def parse_key(config: Config, video: str, frames: int) -> str:
    """What a cached parse depends on: the video, the frames and every setting that changes the output but the
    ones applied after parsing (tracking and the vote)."""
    parsing = replace(config, temporal=TemporalOptions(), tracking=TrackingOptions())
    return json.dumps({"video": str(Path(video).resolve()), "frames": frames, "config": config_hash(parsing)})


def parse(config: Config, video: str, frames: int, cache: Path | None) -> Parsed:
    """(image, labels, result) per frame; labels and boxes from ``cache`` when it holds this parse, else parsed (and
    saved there). The parser's own code is not part of the key: delete the cache after changing it."""
    key = parse_key(config, video, frames)
    stored = np.load(cache) if cache and cache.exists() else None
    if stored is not None and str(stored.get("key", "")) != key:
        print(f"{cache} holds another parse (other video, frames or settings): parsing again")
        stored = None
    if stored is not None:
        source = VideoSource(video, max_frames=frames)
        source.open()
        images = [frame.image for frame in source.frames()]
        source.close()
        parsed = []
        for seq, (image, labels) in enumerate(zip(images, stored["labels"])):
            persons = [PersonStats(tuple(row[:4]), float(row[4]), {}) for row in stored[f"boxes{seq}"]]
            parsed.append((image, labels, FrameResult(seq, persons)))
        return parsed
    parsed = list(parsed_frames(config, ResolvedModels.for_config(config), video, frames, threads=config.threads or 1))
    if cache:
        boxes = {f"boxes{seq}": np.array([[*p.box, p.score] for p in result.persons], np.float32).reshape(-1, 5)
                 for seq, (_, _, result) in enumerate(parsed)}
        np.savez_compressed(cache, key=np.array(key), labels=np.stack([labels for _, labels, _ in parsed]), **boxes)
    return parsed


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def quality(config: Config, parsed: Parsed) -> None:
    label_set = load_label_set(LABEL_SETS[config.model])
    print(f"\nfirst {len(parsed)} frames, every frame parsed (K = 1), {config.model}, tracking {config.tracking}, "
          f"temporal {config.temporal}\n")
    print("| labels | presence flickers | persons | part mIoU vs previous frame % | person IoU vs previous frame % "
          "| moved by flow: part mIoU % | person IoU % | vs parse: person IoU % | pixel flicker % |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in video_rows(parsed, label_set, config, video_modes(config)):
        print(f"| {row.mode} | {row.presence_flickers} | {row.person_frames} | {pct(row.part_agreement)} | "
              f"{pct(row.person_agreement)} | {pct(row.warped_part)} | {pct(row.warped_person)} | "
              f"{pct(row.parse_person)} | {pct(row.rate)} |", flush=True)
    stage = TrackLabels(config.tracking, label_set, config.roi.margin)
    stage.open()
    started, cpu = time.perf_counter(), time.process_time()
    for _, labels, result in parsed:
        stage.process(labels, result)
    print(f"\ntracking stage alone: {(time.perf_counter() - started) / len(parsed) * 1000:.1f} ms/frame wall clock, "
          f"{(time.process_time() - cpu) / len(parsed) * 1000:.1f} ms/frame CPU time")


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the workers, once a run is over)."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def speed(config: Config, video: str, frames: int, rounds: int, workers: int) -> None:
    """fps (wall clock, sensitive to other jobs on the machine) and CPU seconds per frame of the whole process tree
    (start-up included; much less sensitive to them), tracking off and on."""
    print(f"\nreal pipeline, first {frames} frames, {workers} workers, alternated back to back\n")
    print("| round | tracking | fps (steady) | CPU s/frame (all processes) | compose ms/frame (vote + tracking + "
          "recolor) |\n|---|---|---:|---:|---:|")
    fps: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(rounds):
        for enabled in (False, True):
            tracking = replace(config.tracking, enabled=enabled, draw_ids=config.tracking.draw_ids and enabled)
            settings = replace(config, tracking=tracking)
            with scratch_runner(settings, video, workers, settings.threads, max_frames=frames) as runner:
                started = cpu_seconds()
                stats = runner.run()
                cpu[enabled].append((cpu_seconds() - started) / max(1, stats.frames))
            fps[enabled].append(stats.steady_fps)
            compose = stats.stage_s.get("compose", 0.0) / max(1, stats.frames) * 1000
            print(f"| {round_ + 1} | {'on' if enabled else 'off'} | {stats.steady_fps:.2f} | {cpu[enabled][-1]:.2f} | "
                  f"{compose:.1f} |", flush=True)
    for name, values in (("fps", fps), ("CPU s/frame", cpu)):
        off, on = np.mean(values[False]), np.mean(values[True])
        print(f"mean {name}: off {off:.2f} (range {min(values[False]):.2f}-{max(values[False]):.2f}), on {on:.2f} "
              f"(range {min(values[True]):.2f}-{max(values[True]):.2f}), on/off {on / off:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=300, help="frames for the quality measurement; 0 skips it")
    parser.add_argument("--cache", type=Path, help="npz file keeping the parsed frames between runs")
    parser.add_argument("--fps-frames", type=int, default=60, help="frames per speed run; 0 skips the speed runs")
    parser.add_argument("--rounds", type=int, default=2, help="speed runs per setting, alternated")
    parser.add_argument("--workers", type=int, default=2, help="parser workers in the speed runs")
    parser.add_argument("--model", help="parser (default: configs/default.yaml's)")
    parser.add_argument("--config", type=Path, help="settings on top of configs/default.yaml (e.g. "
                        "benchmarks/configs/tracking-flow.yaml)")
    args = parser.parse_args()
    config = load_config(args.config, {"model": args.model})
    print(f"machine: {machine_description()}")
    if args.frames:
        quality(config, parse(config, args.video, args.frames, args.cache))
    if args.fps_frames:
        speed(config, args.video, args.fps_frames, args.rounds, args.workers)


if __name__ == "__main__":
    main()
