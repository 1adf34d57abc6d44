"""Cost of the skin/clothes/hair segmenter by input size, batched against one crop at a time, and how far the
size-agnostic graph (stages/parsers/cihp_lite.py) is from the shipped fixed 512x512 one.

Prints a Markdown table (docs/quality.md holds a run). Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/segmenter_sizes.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vidparse.model_store import resolve_model
from vidparse.stages.onnx_session import open_session
from vidparse.stages.parsers.cihp_lite import size_agnostic_graph

HEIGHTS = (256, 384, 512, 640, 768, 896)
ASPECT = 0.5  # width / height of a typical person crop with its margin


def best_ms(session, batch: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"x.1": batch})
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    path = resolve_model("cihp-lite")
    edited = open_session(path, args.threads, graph=size_agnostic_graph(path))
    rng = np.random.default_rng(0)
    square = rng.normal(size=(1, 3, 512, 512)).astype(np.float32)
    fixed = open_session(path, args.threads)
    difference = np.abs(edited.run(None, {"x.1": square})[0] - fixed.run(None, {"x.1": square})[0]).max()
    print(f"shipped 512x512 graph: {best_ms(fixed, square, args.repeats):.0f} ms; size-agnostic graph at 512x512: "
          f"{best_ms(edited, square, args.repeats):.0f} ms, largest output difference {difference:.1e}\n")
    print("| input (h x w) | 1 crop, ms | 4 crops one by one, ms | 4 crops as one batch, ms |")
    print("|---|---:|---:|---:|")
    for height in HEIGHTS:
        width = -(-int(height * ASPECT) // 32) * 32
        crop = rng.normal(size=(1, 3, height, width)).astype(np.float32)
        one = best_ms(edited, crop, args.repeats)
        batch = best_ms(edited, np.repeat(crop, 4, axis=0), args.repeats)
        print(f"| {height} x {width} | {one:.0f} | {4 * one:.0f} | {batch:.0f} |")


if __name__ == "__main__":
    main()
