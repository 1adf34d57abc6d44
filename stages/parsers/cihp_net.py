"""cihp-net: CIHP's 20 classes from frozen models' outputs and a small network trained here.

Two frozen models look at each person crop: BodyPix (where on the body: person mask, 24 parts with left and
right) and MediaPipe's multiclass segmenter (hair, body skin, face skin, clothes, accessories, and the features its
head draws those from). Their outputs, the crop's pixels and the position in the crop are stacked into
``FEATURES`` context channels at ``NET_HEIGHT`` rows, plus the segmenters' finer outputs and the pixels as
``DETAILS`` channels at ``DETAIL_HEIGHT`` rows, plus the segmenter's coarsest features at the network's bottleneck
(``COARSE_CHANNELS`` at ``COARSE_HEIGHT`` rows); the trained network (an ONNX file, made by ``vidparse train``) sees the
whole crop in the first and draws boundaries from the second, giving garment types (``FINE_CLASSES``: upper, coat,
dress, skirt, pants, ...) at ``DETAIL_HEIGHT`` rows. On crops it saw large enough, the segmenter says what a pixel
is made of where it is sure (hair, skin, clothes, background) and the network only which garment (`garment_types`).
CIHP's body-side classes come from BodyPix: skin becomes face, arm, leg or torso skin and shoes left or right by the
BodyPix part under them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidparse.errors import ModelError
from vidparse.model_store import MODEL_DIR_ENV, PACKAGED_DIR, cache_dir, model_dir, model_spec, resolve_model
from vidparse.stages.labels import FINE_CLASSES, load_label_set
from vidparse.stages.onnx_session import open_session
from vidparse.stages.options import CihpNetOptions as Options
from vidparse.stages.parsers import bodypix, multiclass, upsampling
from vidparse.stages.parsers.base import Parser
from vidparse.stages.roi import Crop

NET_HEIGHT = 128  # rows of the network's context input; the width follows the crop's aspect
DETAIL_HEIGHT = 2 * NET_HEIGHT  # rows of its detail input and of its output
NET_MULTIPLE = 16  # the network halves its context input four times
BODYPIX_HEIGHT = 2 * NET_HEIGHT + 1  # BodyPix sees crops at most this tall (its parts feed the context)
BODYPIX_PARTS = 24
# channel groups of the network input, in order
FEATURE_GROUPS = (("pixels", 3), ("person", 1), ("parts", BODYPIX_PARTS), ("multiclass", len(multiclass.CLASSES)),
                  ("segmenter_features", multiclass.FEATURE_CHANNELS), ("position", 2))
FEATURES = sum(size for _, size in FEATURE_GROUPS)
DETAIL_GROUPS = (("pixels", 3), ("person", 1), ("multiclass", len(multiclass.CLASSES)))
DETAILS = sum(size for _, size in DETAIL_GROUPS)
COARSE_CHANNELS = multiclass.COARSE_CHANNELS
COARSE_HEIGHT = NET_HEIGHT // NET_MULTIPLE  # rows of the coarse input: the network's bottleneck


def _channels(groups: tuple[tuple[str, int], ...]) -> dict[str, slice]:
    """Each group's channels in an input stacked from ``groups`` in order."""
    stops = np.cumsum([size for _, size in groups])
    return {name: slice(int(stop) - size, int(stop)) for (name, size), stop in zip(groups, stops)}


FEATURE_CHANNELS, DETAIL_CHANNELS = _channels(FEATURE_GROUPS), _channels(DETAIL_GROUPS)
PARTS, MULTICLASS = FEATURE_CHANNELS["parts"], FEATURE_CHANNELS["multiclass"]
SEGMENTER_FEATURES = FEATURE_CHANNELS["segmenter_features"]
DETAIL_PERSON, DETAIL_MULTICLASS = DETAIL_CHANNELS["person"].start, DETAIL_CHANNELS["multiclass"]
FACE_SKIN, BODY_SKIN = multiclass.CLASSES.index("face_skin"), multiclass.CLASSES.index("body_skin")
BODYPIX_NAMES = load_label_set("bodypix").names[1:]  # the 24 parts, in channel order


def _cihp_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables: fine class -> CIHP class (skin and shoes decided apart), BodyPix part -> CIHP skin class,
    BodyPix part -> CIHP shoe class."""
    cihp = load_label_set("cihp").names
    direct = {"upper": "upper_clothes", "gloves": "glove"}
    fine = np.array([cihp.index(direct.get(name, name)) if name not in ("skin", "shoes") else 0
                     for name in FINE_CLASSES], np.uint8)
    skin, shoe = np.zeros(BODYPIX_PARTS, np.uint8), np.zeros(BODYPIX_PARTS, np.uint8)
    for index, part in enumerate(BODYPIX_NAMES):
        side = "right" if part.startswith(("r_", "right")) else "left"
        limb = ("arm" if "arm" in part or "hand" in part else "leg" if "leg" in part or "foot" in part else None)
        skin[index] = cihp.index(f"{side}_{limb}" if limb else "torso_skin")
        shoe[index] = cihp.index(f"{side}_shoe")
    return fine, skin, shoe


FINE_TO_CIHP, PART_SKIN, PART_SHOE = _cihp_tables()
SKIN, SHOES, HAIR = FINE_CLASSES.index("skin"), FINE_CLASSES.index("shoes"), FINE_CLASSES.index("hair")
GARMENT_TYPES = np.array([i for i, name in enumerate(FINE_CLASSES) if name not in ("background", "hair", "skin")],
                         np.uint8)
MATERIAL_BACKGROUND, MATERIAL_HAIR, MATERIAL_CLOTHES = (multiclass.CLASSES.index(name)
                                                        for name in ("background", "hair", "clothes"))
# the segmenter's class overrules the network's only where it has more than all its other classes together
MATERIAL_MIN_PROBABILITY = 0.5
UNSURE = 255  # a pixel's material where no class of the segmenter's reaches MATERIAL_MIN_PROBABILITY
FACE = load_label_set("cihp").names.index("face")


def to_cihp(fine: np.ndarray, parts: np.ndarray, face: np.ndarray) -> np.ndarray:
    """CIHP labels from garment types (``FINE_CLASSES`` indices), the BodyPix part under each pixel (0..23) and
    where the multiclass segmenter sees face skin rather than body skin; all of one size."""
    labels = FINE_TO_CIHP[fine]
    skin, shoes = fine == SKIN, fine == SHOES
    labels[skin] = np.where(face[skin], FACE, PART_SKIN[parts[skin]])
    labels[shoes] = PART_SHOE[parts[shoes]]
    return labels


def net_width(height: int, width: int) -> int:
    """Columns of a crop's features at NET_HEIGHT rows (aspect kept); the input is padded to NET_MULTIPLE."""
    return max(1, round(width * NET_HEIGHT / height))


def padded(width: int) -> int:
    return -(-width // NET_MULTIPLE) * NET_MULTIPLE


@dataclass
class CropOutputs:
    """What the frozen models say about one crop, each at its own resolution."""

    image: np.ndarray  # the crop, BGR
    bodypix: np.ndarray  # 25 x h x w logits (person, then parts), stride 16 over the padded input
    bodypix_padded: tuple[int, int]
    multiclass: np.ndarray  # 6 x rows x columns probabilities of the crop (its cell less the padding)
    segmenter_features: np.ndarray  # multiclass.FEATURE_CHANNELS x about half those rows and columns
    segmenter_coarse: np.ndarray  # COARSE_CHANNELS x the segmenter's coarse cells over the crop

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    def bodypix_planes(self, out_hw: tuple[int, int]) -> np.ndarray:
        return bodypix.upsample(self.bodypix, self.bodypix_padded, self.size, out_hw)


def _pixels(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    interpolation = cv2.INTER_AREA if image.shape[0] > out_hw[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (out_hw[1], out_hw[0]), interpolation=interpolation).transpose(2, 0, 1) * np.float32(1 / 255)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits))


def coarse_columns(used: int) -> int:
    """Columns of the coarse input that hold a crop whose context holds ``used`` columns."""
    return -(-used // NET_MULTIPLE)


def features(outputs: CropOutputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's inputs for one crop, float32, zero in the padding: context (FEATURES x NET_HEIGHT x
    padded(width)), details (DETAILS x DETAIL_HEIGHT x twice that width) and coarse (COARSE_CHANNELS x COARSE_HEIGHT x
    a sixteenth of it). The coarse cells are resized straight to the bottleneck's size: resized to the context's
    first, as 64 more context channels, they cost cihp-net 8% of its frames (docs/garments.md)."""
    height, width = outputs.size
    out_hw = (NET_HEIGHT, net_width(height, width))
    context = np.zeros((FEATURES, NET_HEIGHT, padded(out_hw[1])), np.float32)
    view = context[:, :, :out_hw[1]]
    view[0:3] = _pixels(outputs.image, out_hw)
    planes = outputs.bodypix_planes(out_hw)
    view[3] = _sigmoid(planes[0])
    view[PARTS] = multiclass.softmax(planes[1:], axis=0)
    view[MULTICLASS] = upsampling.resized(outputs.multiclass, out_hw)
    view[SEGMENTER_FEATURES] = upsampling.resized(outputs.segmenter_features, out_hw)
    view[-2] = np.linspace(0, 1, out_hw[0], dtype=np.float32)[:, None]
    view[-1] = np.linspace(0, 1, out_hw[1], dtype=np.float32)[None, :]
    detail_hw = (DETAIL_HEIGHT, 2 * out_hw[1])
    details = np.zeros((DETAILS, DETAIL_HEIGHT, 2 * context.shape[2]), np.float32)
    view = details[:, :, :detail_hw[1]]
    view[0:3] = _pixels(outputs.image, detail_hw)
    view[DETAIL_PERSON] = _sigmoid(bodypix.upsample(outputs.bodypix[:1], outputs.bodypix_padded, outputs.size, detail_hw)[0])
    view[DETAIL_MULTICLASS] = upsampling.resized(outputs.multiclass, detail_hw)
    coarse = np.zeros((COARSE_CHANNELS, COARSE_HEIGHT, context.shape[2] // NET_MULTIPLE), np.float32)
    columns = coarse_columns(out_hw[1])
    coarse[:, :, :columns] = upsampling.resized(outputs.segmenter_coarse, (COARSE_HEIGHT, columns))
    return context, details, coarse


def _mirror_order() -> np.ndarray:
    """Context channel order of a mirrored crop: BodyPix's left and right parts swap."""
    order = np.arange(FEATURES)
    swaps = {"left": "right", "right": "left", "l_": "r_", "r_": "l_"}
    for index, name in enumerate(BODYPIX_NAMES):
        prefix = next(p for p in ("left", "right", "l_", "r_", "") if name.startswith(p))
        if prefix:
            order[PARTS.start + index] = PARTS.start + BODYPIX_NAMES.index(swaps[prefix] + name[len(prefix):])
    return order


MIRROR_ORDER = _mirror_order()


def mirrored(context: np.ndarray, details: np.ndarray, coarse: np.ndarray, used: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's inputs (one crop's, or a batch's on the first axis) as the crop seen in a mirror: its first
    ``used`` context columns (twice as many detail columns, `coarse_columns` coarse ones) reversed, BodyPix's left and
    right parts swapped, the column position left running left to right."""
    context = context.copy()
    position = context[..., -1, :, :used].copy()
    context[..., :, :, :used] = context[..., MIRROR_ORDER, :, used - 1::-1]
    context[..., -1, :, :used] = position
    return context, reversed_columns(details, 2 * used), reversed_columns(coarse, coarse_columns(used))


def reversed_columns(array: np.ndarray, columns: int) -> np.ndarray:
    """A copy with the first ``columns`` of the last axis in reverse order: details, labels or logits (garment types
    have no side) at the network's detail width seen in a mirror, or put back the right way round."""
    array = array.copy()
    array[..., :columns] = array[..., columns - 1::-1]
    return array


def person_probability(bodypix_logits: np.ndarray, bodypix_padded: tuple[int, int], size: tuple[int, int]) -> float:
    """BodyPix's highest person probability in a crop of ``size`` (height, width), as the network's context input
    holds it (its person channel at NET_HEIGHT rows)."""
    out_hw = (NET_HEIGHT, net_width(*size))
    return float(_sigmoid(bodypix.upsample(bodypix_logits[:1], bodypix_padded, size, out_hw)).max())


def garment_types(logits: np.ndarray, materials: np.ndarray | None) -> np.ndarray:
    """``FINE_CLASSES`` indices from the network's logits; with ``materials`` (the multiclass segmenter's class per
    pixel at the logits' size, UNSURE where it is unsure) the segmenter says what a pixel is made of and the network
    only which garment: hair and skin where the segmenter sees them, a garment where it sees clothes, and neither
    hair nor skin where it sees background. The segmenter draws those edges better than the network learns them
    from 674 photos (docs/garments.md, "Materials from the segmenter")."""
    fine = logits.argmax(axis=0).astype(np.uint8)
    if materials is None:
        return fine
    clothes = materials == MATERIAL_CLOTHES
    fine[clothes] = GARMENT_TYPES[logits[GARMENT_TYPES][:, clothes].argmax(axis=0)]
    fine[(materials == MATERIAL_BACKGROUND) & ((fine == HAIR) | (fine == SKIN))] = 0
    fine[materials == MATERIAL_HAIR] = HAIR
    fine[(materials == FACE_SKIN) | (materials == BODY_SKIN)] = SKIN
    return fine


def class_offsets(options: Options) -> np.ndarray:
    """``options.class_offsets`` as a vector over FINE_CLASSES."""
    return np.array([getattr(options.class_offsets, name) for name in FINE_CLASSES], np.float32)


def labels_at(logits: np.ndarray, parts: np.ndarray, multiclass_planes: np.ndarray, no_person: np.ndarray,
              materials: bool, offsets: np.ndarray | None = None, guide: np.ndarray | None = None) -> np.ndarray:
    """CIHP labels at the size of ``parts`` and ``no_person`` from the network's logits over the crop (padding cut
    off) and the multiclass segmenter's planes (``multiclass.CLASSES`` first), both upsampled before the argmax
    (bilinearly, or with ``guide``, the crop's `upsampling.brightness`, along the crop's edges); ``materials``: the
    segmenter's classes overrule the network's as `garment_types` says where it gives one more than
    MATERIAL_MIN_PROBABILITY; background wherever ``no_person`` is set. Face skin is skin the segmenter rates face
    skin above body skin. ``offsets`` (one per FINE_CLASSES) are added to the logits first."""
    if offsets is not None:
        logits = logits + offsets[:, None, None]
    material = None
    if materials:  # all its planes at the crop's size only here: most crops in video are under the rows asked
        segmenter = upsampling.upsampled(multiclass_planes, parts.shape, guide)
        material = segmenter.argmax(axis=0).astype(np.uint8)
        material[segmenter.max(axis=0) < MATERIAL_MIN_PROBABILITY] = UNSURE
    fine = garment_types(upsampling.upsampled(logits, parts.shape, guide), material)
    fine[no_person] = 0
    face_margin = multiclass_planes[FACE_SKIN] - multiclass_planes[BODY_SKIN]
    return to_cihp(fine, parts, cv2.resize(face_margin, parts.shape[::-1], interpolation=cv2.INTER_LINEAR) > 0)


def segmenter_detail(options: Options, frame_width: int) -> float:
    """How finely the segmenter sees the crops of a frame this wide: wide frames (cameras over crowds) hold small
    people, whose garments need finer cells."""
    wide = options.wide_frame_width
    return options.wide_segmenter_detail if wide and frame_width >= wide else options.segmenter_detail


class FrozenModels:
    """BodyPix and the multiclass segmenter, run on a batch of crops."""

    def __init__(self, options: Options, threads: int | None = None, device: str = "cpu") -> None:
        self.bodypix = bodypix.BodyPixParser(resolve_model("bodypix"), bodypix.Options(), threads, device)
        self.multiclass = multiclass.MulticlassSegmenter(resolve_model("multiclass"), threads, options.segmenter_detail)

    def open(self) -> None:
        self.bodypix.open()
        self.multiclass.open()

    def analyze(self, crops: Sequence[Crop], min_person_probability: float = 0.0,
                segmenter_detail: float | None = None) -> list[CropOutputs | None]:
        """Per crop, what the models say about it; None where BodyPix's highest person probability stays under
        ``min_person_probability``. BodyPix looks first, so the segmenter packs only the crops that hold a person:
        a dropped crop takes no room from the others' cells. ``segmenter_detail``: instead of the options' one."""
        seen = [self._bodypix(crop.image) for crop in crops]
        people = [index for index, (logits, padded_hw) in enumerate(seen)
                  if person_probability(logits, padded_hw, crops[index].image.shape[:2]) >= min_person_probability]
        segmented = self.multiclass.segment([crops[i].image for i in people],
                                            [len(crops[i].image) / max(crops[i].scale, 1.0) for i in people],
                                            segmenter_detail)
        outputs: list[CropOutputs | None] = [None] * len(crops)
        for index, found in zip(people, segmented):
            outputs[index] = CropOutputs(crops[index].image, *seen[index], found.probabilities, found.features,
                                         found.coarse)
        return outputs

    def _bodypix(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """BodyPix's logits of the image seen at most BODYPIX_HEIGHT rows tall, as if of the whole image."""
        height, width = image.shape[:2]
        if height <= BODYPIX_HEIGHT:
            return self.bodypix.logits(image)[:2]
        scale = BODYPIX_HEIGHT / height
        seen = cv2.resize(image, (max(1, round(width * scale)), BODYPIX_HEIGHT), interpolation=cv2.INTER_AREA)
        logits, (padded_h, padded_w), _ = self.bodypix.logits(seen)
        return logits, (round(padded_h / scale), round(padded_w / scale))

    def close(self) -> None:
        self.bodypix.close()
        self.multiclass.close()


def mismatch(session: Any) -> str | None:
    """How the network of ``session`` differs from a cihp-net network for this version of vidparse; None if not."""
    channels = [i.shape[1] if len(i.shape) == 4 else None for i in session.get_inputs()]
    classes = [o.shape[1] if len(o.shape) == 4 else None for o in session.get_outputs()]
    if channels == [FEATURES, DETAILS, COARSE_CHANNELS] and classes == [len(FINE_CLASSES)]:
        return None
    return (f"inputs of {channels} channels, {classes} classes; expected {[FEATURES, DETAILS, COARSE_CHANNELS]} "
            f"and {len(FINE_CLASSES)}")


def file_mismatch(path: Path) -> str | None:
    """`mismatch` of the ONNX file at ``path`` (`vidparse models pull cihp-net --from` checks a file with it)."""
    return mismatch(open_session(path))


def how_to_replace(path: Path) -> str:
    """The hint for a cihp-net file that does not fit, by where it was found: a copy pulled into the cache or put
    in ``$VIDPARSE_MODEL_DIR`` hides the shipped weights; otherwise the user named it."""
    spec = model_spec("cihp-net")
    if path == cache_dir() / spec.path:
        return f"`vidparse models pull {spec.name}` removes this copy (pulled --from elsewhere) for the shipped weights"
    if (folder := model_dir()) and path == folder / spec.path:
        return f"remove it from ${MODEL_DIR_ENV} to use the shipped weights, or train ones with `vidparse train`"
    if path == PACKAGED_DIR / spec.path:
        return "the weights shipped with vidparse are damaged: reinstall vidparse"
    return "train weights for this version with `vidparse train`, or drop --model-dir"


class GarmentNet:
    """The trained network: features in, ``FINE_CLASSES`` logits out (ONNX Runtime)."""

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu") -> None:
        self.path, self.threads, self.device = path, threads, device
        self._session = None

    def open(self) -> None:
        session = open_session(self.path, self.threads, device=self.device)
        if why := mismatch(session):
            raise ModelError(f"{self.path} is not a cihp-net network for this version of vidparse ({why})",
                             hint=how_to_replace(self.path))
        self._session, self._inputs = session, [i.name for i in session.get_inputs()]

    def logits(self, context: np.ndarray, details: np.ndarray, coarse: np.ndarray, mirror_columns: int = 0
               ) -> np.ndarray:
        """FINE_CLASSES x DETAIL_HEIGHT x (details' width) logits of one crop (a call per crop: padding a frame's
        crops to the widest made a batch 3x slower on vtest). With ``mirror_columns`` (the crop's real context
        columns), averaged with the logits of the crop seen in a mirror (one call, the two as a batch)."""
        assert self._session is not None, "open() first"
        inputs = (context, details, coarse)
        if not mirror_columns:
            return self._session.run(None, dict(zip(self._inputs, (i[None] for i in inputs))))[0][0]
        flipped = mirrored(*inputs, mirror_columns)
        both = self._session.run(None, dict(zip(self._inputs, (np.stack(pair) for pair in zip(inputs, flipped)))))[0]
        return (both[0] + reversed_columns(both[1], 2 * mirror_columns)) / 2

    def close(self) -> None:
        self._session = None


def crop_labels(logits: np.ndarray, outputs: CropOutputs, min_pixel_person_probability: float,
                materials: bool, offsets: np.ndarray | None, edge_guided: bool) -> np.ndarray:
    """CIHP labels of one crop at its own size, from its logits (FINE_CLASSES x DETAIL_HEIGHT x padded width);
    background where BodyPix's person probability is under ``min_pixel_person_probability``; ``materials`` and
    ``offsets``: as `labels_at`; ``edge_guided``: every plane the models drew coarser than the crop is upsampled
    along the crop's own edges (`upsampling.upsampled`)."""
    height, width = outputs.size
    planes = outputs.bodypix_planes((height, width))
    guide = upsampling.brightness(outputs.image) if edge_guided else None
    person = _sigmoid(planes[0]) if guide is None else guided_person(outputs, guide)
    return labels_at(logits[:, :, :2 * net_width(height, width)], planes[1:].argmax(axis=0), outputs.multiclass,
                     person < min_pixel_person_probability, materials, offsets, guide)


def guided_person(outputs: CropOutputs, guide: np.ndarray) -> np.ndarray:
    """BodyPix's person probability over the crop, its edge moved onto the crop's: BodyPix draws it at a sixteenth
    of the rows it saw (at most BODYPIX_HEIGHT), so the fitting windows are half of that step."""
    height, width = outputs.size
    seen = min(height, BODYPIX_HEIGHT)
    seen_hw = (seen, max(1, round(width * seen / height)))
    probability = _sigmoid(bodypix.upsample(outputs.bodypix[:1], outputs.bodypix_padded, outputs.size, seen_hw))
    return upsampling.upsampled(probability, outputs.size, guide, radius=bodypix.STRIDE // 2)[0]


def materials_apply(options: Options, outputs: CropOutputs) -> bool:
    """Whether the segmenter's materials overrule the network's on this crop (`garment_types`)."""
    return options.segmenter_materials and outputs.multiclass.shape[1] >= options.segmenter_materials_min_rows


class CihpNetParser(Parser):
    def __init__(self, weights: Path, options: Options, threads: int | None = None, device: str = "cpu") -> None:
        self.label_set = load_label_set("cihp")
        self.frozen = FrozenModels(options, threads, device)  # the multiclass segmenter runs on the CPU (LiteRT)
        self.net = GarmentNet(weights, threads, device)
        self.options = options
        self.offsets = class_offsets(options)

    def open(self) -> None:
        self.frozen.open()
        self.net.open()

    def parse(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.parse_crops([Crop(region=(0, 0, image.shape[1], image.shape[0]), image=image, scale=1.0)
                                 for image in images])

    def parse_crops(self, crops: Sequence[Crop], frame_width: int = 0) -> list[np.ndarray]:
        """Labels per crop; none in a crop where BodyPix sees no person (a traffic cone, a bin)."""
        options = self.options
        analyzed = self.frozen.analyze(crops, options.min_person_probability, segmenter_detail(options, frame_width))
        return [np.zeros(crop.image.shape[:2], np.uint8) if outputs is None else self._labels(outputs)
                for crop, outputs in zip(crops, analyzed)]

    def _labels(self, outputs: CropOutputs) -> np.ndarray:
        options = self.options
        logits = self.net.logits(*features(outputs), net_width(*outputs.size) if options.mirror else 0)
        materials = materials_apply(options, outputs)
        # the class offsets were chosen with the materials, on people seen large (docs/garments.md, "Class offsets")
        return crop_labels(logits, outputs, options.min_pixel_person_probability, materials,
                           self.offsets if materials else None, options.edge_guided)

    def close(self) -> None:
        self.frozen.close()
        self.net.close()


def create(name: str, options: Options, model_path: Path, device: str, threads: int | None = None) -> Parser:
    return CihpNetParser(model_path, options, threads, device)
