"""MediaPipe's multiclass selfie segmenter (TFLite): background, hair, body skin, face skin, clothes, others.

Its input is fixed at 256x256 (the interpreter cannot resize it), and one call costs as much as parsing several
small people with BodyPix, so small crops share a call: each gets a square cell sized to its rows of real pixels
(times the detail asked for, at least a quarter of the input's side), the cells are packed onto as few inputs as
they fit, shelf by shelf, and then grow into the room those inputs have left. Each crop is stretched to fill its
cell, as the model expects a whole image stretched to its input, after black columns (or rows) pad it to an ordinary
photo's shape: a person crop is about three times taller than wide, and stretched that much the model sees poorly
(on ccp-train photos, hair / skin / clothes IoU 60 / 73 / 77 on crops around the person against 79 / 82 / 87 with the
crops padded to 3:4 and 76 / 81 / 84 on the whole photo).
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidparse.errors import ModelError

CLASSES = ("background", "hair", "body_skin", "face_skin", "clothes", "others")
SIDE = 256  # the model's input height and width
MIN_CELL = SIDE // 4  # the smallest cell: 16 crops to a call
ASPECT = 0.75  # width / height an image is padded to at least (and height / width)

# The segmentation head's first features (after the feature pyramid's levels are summed; 32 channels at half the
# input's resolution): what the model knows of a pixel before it is reduced to its six classes. Scaled to about unit
# spread (they are ReLU outputs of about 0.02 on average).
FEATURE_TENSOR = "segmentation_head_norm_0/batchnorm/sub"
FEATURE_CHANNELS = 32
FEATURE_SCALE = 40.0
# The feature pyramid's coarsest level (64 channels at a sixteenth of the input's resolution, the deepest features
# projected): what the model knows of the whole person around a pixel. Scaled to about unit spread.
COARSE_TENSOR = "fpn_3/separable_conv2d_31/separable_conv2d"
COARSE_CHANNELS = 64
COARSE_STRIDE = 16
COARSE_SCALE = 5.0

Cell = tuple[int, int, int]  # a crop's index, the top and left of its cell in a call's input

log = logging.getLogger(__name__)


@contextmanager
def native_stderr_logged() -> Iterator[None]:
    """What native code writes to the process's stderr meanwhile, logged instead: LiteRT prints an "INFO: Created
    TensorFlow Lite XNNPACK delegate" line per interpreter straight to file descriptor 2, which no setting of its
    Python API silences. Its INFO lines are logged at debug level, anything else as a warning."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                log.log(logging.DEBUG if line.startswith("INFO: ") else logging.WARNING, "LiteRT: %s", line)


def cell_side(height: float, detail: float) -> int:
    """The side of the square cell of a crop holding ``height`` rows of real pixels: ``detail`` x ``height``, at
    least MIN_CELL, at most the whole input."""
    return int(min(SIDE, max(MIN_CELL, np.ceil(height * detail))))


def fitted_sides(heights: Sequence[float], detail: float, steps: int = 6) -> list[int]:
    """Cell sides for crops holding these rows of real pixels: at least ``detail`` of each, and grown by one share
    (up to all of each crop's rows) as far as they still pack onto as few inputs as at ``detail``."""
    def sides(share: float) -> list[int]:
        return [cell_side(height, share) for height in heights]

    calls = len(pack(sides(detail)))
    if len(pack(sides(1.0))) <= calls:
        return sides(1.0)
    low, high = detail, 1.0  # fits, does not
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if len(pack(sides(middle))) <= calls else (low, middle)
    return sides(low)


def pack(sides: Sequence[int]) -> list[list[Cell]]:
    """Square cells of these sides packed onto SIDE x SIDE inputs, the biggest first: each goes on the first shelf
    (a row of cells as tall as its first one) with room on the first input that has one, else on a new shelf below
    the last, else on a new input. Per input, its cells."""
    inputs: list[list[Cell]] = []
    shelves: list[list[list[int]]] = []  # per input: [top, height, left of the free space] of each shelf
    for index in sorted(range(len(sides)), key=lambda i: -sides[i]):
        for cells, its_shelves in zip(inputs, shelves):
            spot = _room(its_shelves, sides[index])
            if spot is not None:
                cells.append((index, *spot))
                break
        else:
            inputs.append([(index, 0, 0)])
            shelves.append([[0, sides[index], sides[index]]])
    return inputs


def _room(shelves: list[list[int]], side: int) -> tuple[int, int] | None:
    """Top and left of a free ``side`` x ``side`` spot on these shelves (taken), or None."""
    for shelf in shelves:
        top, height, left = shelf
        if side <= height and left + side <= SIDE:
            shelf[2] += side
            return top, left
    top = shelves[-1][0] + shelves[-1][1]
    if top + side > SIDE:
        return None
    shelves.append([top, side, side])
    return top, 0


def _window(height: int, width: int, side: int) -> tuple[int, int, int, int]:
    """Where an image goes in its ``side`` x ``side`` cell once padded (centred) to ``ASPECT``: top, left, rows,
    columns; the canvas is black (-1 after scaling) elsewhere."""
    rows = columns = side
    if width < height * ASPECT:
        columns = max(1, min(side, round(side * width / (height * ASPECT))))
    elif height < width * ASPECT:
        rows = max(1, min(side, round(side * height / (width * ASPECT))))
    return (side - rows) // 2, (side - columns) // 2, rows, columns


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


@dataclass
class Segmented:
    """What the segmenter says of one image: ``probabilities``, 6 x rows x columns (``CLASSES``), ``features``,
    FEATURE_CHANNELS x about half as many rows and columns (FEATURE_TENSOR, times FEATURE_SCALE), and ``coarse``,
    COARSE_CHANNELS x the COARSE_STRIDE cells the image touches (COARSE_TENSOR, times COARSE_SCALE)."""

    probabilities: np.ndarray
    features: np.ndarray
    coarse: np.ndarray


def with_feature_output(model: bytes) -> bytes:
    """The TFLite model with FEATURE_TENSOR and COARSE_TENSOR as its second and third outputs (its flatbuffer edited
    in memory), so that one call gives all three; an error when the model has no such tensors."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    edited = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    graph = edited.subgraphs[0]
    found = [next((index for index, tensor in enumerate(graph.tensors) if tensor.name.decode().endswith(name)
                   and list(tensor.shape) == [1, SIDE // stride, SIDE // stride, channels]), None)
             for name, stride, channels in ((FEATURE_TENSOR, 2, FEATURE_CHANNELS),
                                            (COARSE_TENSOR, COARSE_STRIDE, COARSE_CHANNELS))]
    if None in found:
        raise ModelError("the multiclass segmenter has no segmentation head features",
                         hint="this is not MediaPipe's selfie_multiclass_256x256; vidparse models pull multiclass")
    graph.outputs = [*graph.outputs, *found]
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(edited.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class MulticlassSegmenter:
    """``segment(images, heights)``: per BGR image, its `Segmented` at most cell x cell: the image is padded to
    ``ASPECT`` and stretched to its cell, and the padding's share of the cell cut off again; ``heights``: rows of real
    pixels in each image (less than its height where it was enlarged), which size its cell; ``detail``: the share of
    those rows a cell keeps, instead of the segmenter's own."""

    def __init__(self, model_path: Path, threads: int | None = None, detail: float = 0.33) -> None:
        self.model_path, self.threads, self.detail = model_path, threads, detail
        self._interpreter = None

    def open(self) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelError("the multiclass segmenter needs the LiteRT runtime",
                             hint='pip install ai-edge-litert (it comes with: pip install "vidparse")') from exc
        unreadable = f"cannot load model {self.model_path}"
        hint = "the file is corrupt or not a TFLite model; fetch it again: vidparse models pull multiclass"
        try:
            model = with_feature_output(self.model_path.read_bytes())
        except (struct.error, ValueError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as exc:  # damaged
            raise ModelError(f"{unreadable}: it is not a TFLite model, or a damaged one", hint=hint) from exc
        except OSError as exc:
            raise ModelError(f"{unreadable}: {exc.strerror or exc}", hint=hint) from exc
        try:
            interpreter = Interpreter(model_content=model, num_threads=self.threads or 1)
            with native_stderr_logged():
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{unreadable}: {str(exc).splitlines()[0]}", hint=hint) from exc
        (source,), (target, features, coarse) = interpreter.get_input_details(), interpreter.get_output_details()
        if tuple(source["shape"]) != (1, SIDE, SIDE, 3) or tuple(target["shape"]) != (1, SIDE, SIDE, len(CLASSES)):
            raise ModelError(f"{self.model_path} is not the multiclass selfie segmenter (input {source['shape']}, "
                             f"output {target['shape']})", hint="vidparse models pull multiclass")
        self._interpreter, self._input = interpreter, source["index"]
        self._output, self._features, self._coarse = target["index"], features["index"], coarse["index"]

    def segment(self, images: Sequence[np.ndarray], heights: Sequence[float] | None = None,
                detail: float | None = None) -> list[Segmented]:
        results: list[Segmented | None] = [None] * len(images)
        sides = fitted_sides([image.shape[0] if heights is None else heights[index]
                              for index, image in enumerate(images)], self.detail if detail is None else detail)
        for cells in pack(sides):
            for (index, _, _), segmented in zip(cells, self._segment_call(images, cells, sides)):
                results[index] = segmented
        return [r for r in results if r is not None]

    def _segment_call(self, images: Sequence[np.ndarray], cells: list[Cell], sides: list[int]) -> list[Segmented]:
        assert self._interpreter is not None, "open() first"
        canvas = np.zeros((SIDE, SIDE, 3), np.float32)
        windows = []
        for index, y, x in cells:
            image = images[index]
            top, left, rows, columns = _window(image.shape[0], image.shape[1], sides[index])
            interpolation = cv2.INTER_AREA if image.shape[0] > rows else cv2.INTER_LINEAR
            canvas[y + top:y + top + rows, x + left:x + left + columns] = cv2.resize(
                image, (columns, rows), interpolation=interpolation)[:, :, ::-1]
            windows.append((y + top, x + left, rows, columns))
        canvas *= 1 / 127.5
        canvas -= 1
        self._interpreter.set_tensor(self._input, canvas[None])
        self._interpreter.invoke()
        logits = self._interpreter.get_tensor(self._output)[0]
        features = self._interpreter.get_tensor(self._features)[0]
        coarse = self._interpreter.get_tensor(self._coarse)[0]
        stride = COARSE_STRIDE
        return [Segmented(softmax(logits[y:y + rows, x:x + columns], axis=2).transpose(2, 0, 1),
                          # the window at half resolution, at least one feature each way
                          features[y // 2:max(y // 2 + 1, (y + rows) // 2), x // 2:max(x // 2 + 1, (x + columns) // 2)]
                          .transpose(2, 0, 1) * np.float32(FEATURE_SCALE),
                          # every coarse cell the window touches
                          coarse[y // stride:-(-(y + rows) // stride), x // stride:-(-(x + columns) // stride)]
                          .transpose(2, 0, 1) * np.float32(COARSE_SCALE))
                for y, x, rows, columns in windows]

    def close(self) -> None:
        self._interpreter = None
