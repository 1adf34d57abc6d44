"""CPU time of a stream's ordered label stages (the temporal vote over parses moved by optical flow, then tracking:
what the compose thread runs before the recolor) per frame, on recorded parses of a video (`evaluation/replay.py`,
recorded on the first run) with the flow measured beforehand, in this one process on one OpenCV thread: no workers
compete with it, so code versions can be compared run against run. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/label_stages_time.py ../shared/data/video/vtest.avi \\
        --frames 300
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import av
import cv2

from vidparse.config import load_config
from vidparse.evaluation.replay import load_recording, recorded
from vidparse.stages.labels import load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.track_labels import OrderedLabels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # CPU time on more threads also counts their waiting for each other
    config = load_config()
    recording = load_recording(recorded(config, args.video, args.frames))
    with av.open(args.video) as container:
        images = [frame.to_ndarray(format="bgr24") for _, frame in zip(range(args.frames), container.decode(video=0))]
    stages = OrderedLabels(load_label_set(LABEL_SETS[config.model]), config.temporal, config.tracking, config.roi.margin)
    stages.open()
    flows = [stages.measure(image, labels, seq) for seq, (image, labels) in enumerate(zip(images, recording.labels))]
    print(f"load average before: {os.getloadavg()}")
    cpu_s = 0.0
    for labels, image, result, flow in zip(recording.labels, images, recording.results, flows):
        started = time.process_time()
        stages.process(labels, image, copy.deepcopy(result), flow)
        cpu_s += time.process_time() - started
    stages.close()
    print(f"load average after: {os.getloadavg()}")
    print(f"vote + tracking: {1000 * cpu_s / len(images):.2f} ms CPU a frame over {len(images)} frames "
          f"({config.model} parses)")


if __name__ == "__main__":
    main()
