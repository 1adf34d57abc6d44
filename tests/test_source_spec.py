"""A stream's source process gets only its input's description and imports only what decoding needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from multiprocess.reduction import ForkingPickler

from vidparse.config import Config
from vidparse.jobs import StreamSpec

HEAVY = ("cv2", "scipy", "onnxruntime", "torch", "yaml", "vidparse.config", "vidparse.jobs")

# What a spawned source process does (multiprocess.spawn): import the target's module, unpickle its arguments,
# then decode; it reports which heavy modules it ended up importing.
CHILD = f"""
import json, sys
import multiprocess.spawn
from vidparse.pipeline.processes import source_main
spec = multiprocess.reduction.ForkingPickler.loads(sys.stdin.buffer.read())
source = spec.make_source(None)
info = source.open()
frame = next(source.frames())
source.close()
print(json.dumps({{"shape": list(frame.image.shape), "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_the_source_process_imports_no_parser_libraries(clip: Path, tmp_path: Path) -> None:
    spec = StreamSpec(Config(), str(clip), tmp_path / "out.mp4", max_frames=2)
    payload = bytes(ForkingPickler.dumps(spec.source_spec()))
    child = subprocess.run([sys.executable, "-c", CHILD], input=payload, capture_output=True, check=True)
    report = json.loads(child.stdout)
    assert report["shape"] == [576, 768, 3]  # it really decoded the clip
    assert report["heavy"] == []


def test_the_workers_modules_import_no_scipy() -> None:
    """scipy.optimize (the tracker's assignment) took half a second to import in every worker, which never tracks:
    about a second of CPU on every run with two workers."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, vidparse.jobs; print(' '.join(sorted(sys.modules)))"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert "scipy" not in loaded
