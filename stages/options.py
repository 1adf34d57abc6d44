"""Every stage's settings, as plain dataclasses in one light module: `vidparse.config` builds and validates them
without importing the stages themselves (PyAV, OpenCV, SciPy, ONNX Runtime), so ``import vidparse.config`` stays
cheap. Each stage imports its own options from here. A field's ``metadata`` gives its valid ``range`` or
``choices``."""

from __future__ import annotations

from dataclasses import dataclass, field

from vidparse.errors import ConfigError, ModelError

FLOW_PRESET_NAMES = ("ultrafast", "fast", "medium")  # DIS optical flow presets (stages/motion.py maps them)


@dataclass
class DetectorOptions:
    score_threshold: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    nms_iou: float = field(default=0.45, metadata={"range": (0.0, 1.0)})
    min_height: int = field(default=16, metadata={"range": (0, 100_000)})  # shorter boxes (frame pixels) are dropped
    # a finer pass for small people: the frame also cut into this many overlapping tiles across, and as many rows
    # as keep them about square, each seen at the detector's input size (a 40-pixel person in 720p is 20 pixels
    # to the whole-frame pass); 0 = off
    tiles: int = field(default=4, metadata={"range": (0, 8)})
    # only the top this many rows of tiles (the far part of a camera looking down on a crowd); 0 = all rows
    tile_rows: int = field(default=0, metadata={"range": (0, 8)})
    # tiles reach this share of their size into their neighbours, so that a person on a border is whole in one
    tile_overlap: float = field(default=0.25, metadata={"range": (0.0, 1.0)})
    # person score in a tile; small boxes found at it are only candidates for the zoomed look below
    tile_score_threshold: float = field(default=0.4, metadata={"range": (0.0, 1.0)})
    # boxes shorter than this (frame pixels) are looked at again, zoomed: the detector runs on a square window
    # zoom_window times the box's height around it, and what it finds there at zoom_score_threshold replaces them (a
    # loose box made tight, a false one dropped, a neighbour found); 0 = off
    zoom_below: int = field(default=100, metadata={"range": (0, 100_000)})
    zoom_window: float = field(default=4.0, metadata={"range": (1.5, 16.0)})
    # at most this many zoomed looks a frame (each costs a detector run); small boxes past them stay as found, but
    # for candidates under tile_score_threshold, which are dropped
    zoom_max_windows: int = field(default=32, metadata={"range": (1, 1000)})
    # small whole boxes found in tiles at this score, under tile_score_threshold, are candidates: looked at zoomed
    # like the others (after them), and dropped unless the closer look finds someone there
    zoom_candidate_threshold: float = field(default=0.25, metadata={"range": (0.0, 1.0)})
    # person score at which a zoomed look keeps what it finds (seen 3-4 times larger, a small person scores 0.8 and
    # up, a post or a bin seen as closely often 0.5-0.6)
    zoom_score_threshold: float = field(default=0.55, metadata={"range": (0.0, 1.0)})
    # people too small for the tiles to find at all: where the boxes found say how tall people are at each row of the
    # frame (a camera looking down: the farther up, the smaller), the rows where people from scan_above to scan_below
    # pixels tall stand are scanned in square windows scan_window times the height expected there, looked at as the
    # zoomed look does; at most scan_max_windows a frame (a detector run each); scan_below 0 = off
    scan_below: int = field(default=0, metadata={"range": (0, 100_000)})
    scan_above: int = field(default=24, metadata={"range": (1, 100_000)})
    scan_window: float = field(default=3.0, metadata={"range": (2.5, 16.0)})  # under 2.5: rows leave gaps
    scan_max_windows: int = field(default=48, metadata={"range": (1, 1000)})
    # frames narrower than this get no finer pass (neither tiles, zoomed looks nor the scan)
    tile_min_width: int = field(default=1280, metadata={"range": (0, 100_000)})

    def __post_init__(self) -> None:
        if self.scan_below and self.scan_above >= self.scan_below:
            raise ConfigError(f"config key 'detector.scan_above' ({self.scan_above}) is not under 'detector.scan_below' "
                              f"({self.scan_below}): the scan has no heights to look for",
                              hint="set detector.scan_above below detector.scan_below, or detector.scan_below to 0 (off)")
        if self.tiles == 1:
            raise ConfigError("config key 'detector.tiles' is 1: one tile is the whole frame again",
                              hint="set detector.tiles to 0 (off) or 2 or more (tiles across)")


@dataclass
class KeyframeOptions:
    # parse frames whose number is a multiple of this; carry labels to the others by optical flow; 1 = parse all
    parse_every: int = field(default=1, metadata={"range": (1, 100)})
    # DIS optical flow preset: ultrafast | fast | medium (slower, follows fast limbs better)
    flow_preset: str = field(default="ultrafast", metadata={"choices": FLOW_PRESET_NAMES})


@dataclass
class RoiOptions:
    # "roi": parse person crops; "whole": parse the whole frame, boxes only for statistics
    mode: str = field(default="roi", metadata={"choices": ("roi", "whole")})
    # context added around each box, as a share of its width and height
    margin: float = field(default=0.15, metadata={"range": (0.0, 2.0)})
    # crops are scaled so the box plus margin is this many pixels tall (at most, with max_upscale)
    person_height: int = field(default=512, metadata={"range": (32, 4096)})
    # > 0: a crop is enlarged no more than this many times its height in the frame; 0: always person_height
    max_upscale: float = field(default=2.0, metadata={"range": (0.0, 64.0)})
    # crops are pasted smallest box first; a box whose parse finds less than this share of the person pixels it labels
    # still unpainted is dropped (a box around people smaller boxes have found); 0 keeps every box with a person
    min_new_share: float = field(default=0.2, metadata={"range": (0.0, 1.0)})


@dataclass
class ComposeOptions:
    alpha: float = field(default=0.6, metadata={"range": (0.0, 1.0)})  # weight of the class color over the frame
    legend: bool = False


@dataclass
class EncoderOptions:
    crf: int = field(default=20, metadata={"range": (0, 51)})
    preset: str = field(default="veryfast", metadata={"choices": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")})
    # > 0: a new file every this many seconds of video, named <stem>_<UTC start time><suffix>; 0: one file.
    segment_seconds: float = field(default=0.0, metadata={"range": (0.0, 86_400.0)})
    # MP4/MOV written as fragments (matroska needs nothing): playable however the process ends.
    fragmented: bool = False


@dataclass
class LiveOptions:
    """How live inputs are read and recovered."""

    rtsp_transport: str = field(default="tcp", metadata={"choices": ("tcp", "udp")})
    open_timeout_s: float = field(default=10.0, metadata={"range": (0.1, 600.0)})  # connect + get the first frame
    read_timeout_s: float = field(default=5.0, metadata={"range": (0.1, 600.0)})  # longest wait for data: a stall
    reconnect_attempts: int = field(default=-1, metadata={"range": (-1, 1_000_000)})  # in a row; -1 = unlimited
    backoff_initial_s: float = field(default=0.5, metadata={"range": (0.0, 60.0)})  # wait before the 1st attempt
    backoff_max_s: float = field(default=10.0, metadata={"range": (0.0, 3600.0)})  # doubling stops here


@dataclass
class TemporalOptions:
    # parses voted over per pixel (the current one included), the older ones moved by optical flow; 1 = off
    window: int = field(default=5, metadata={"range": (1, 15)})
    # weight of a parse against the one a frame newer
    decay: float = field(default=0.8, metadata={"range": (0.05, 1.0)})
    # a pixel is a person where the parses calling it one weigh more than this share of all
    person_share: float = field(default=0.4, metadata={"range": (0.05, 0.95)})
    # which part a person pixel is: voted over this many parses, each weighing part_decay against the one newer
    part_window: int = field(default=7, metadata={"range": (1, 15)})
    part_decay: float = field(default=1.0, metadata={"range": (0.05, 1.0)})
    # a person pixel keeps its part while that part weighs at least the best one's weight less this share of all
    part_hold: float = field(default=0.3, metadata={"range": (0.0, 1.0)})
    # the optical flow (DIS, with this preset) is measured at this share of the frame's size
    flow_preset: str = field(default="ultrafast", metadata={"choices": FLOW_PRESET_NAMES})
    flow_scale: float = field(default=1.0, metadata={"range": (0.1, 1.0)})
    # a frame is a cut (the vote forgets the parses before it, every track ends) where its image contradicts more
    # than this share of the person pixels of the parse before, moved onto it, and its own parse mostly disagrees
    # with them; keyframe mode parses a frame whose image contradicts this share of the labels carried onto it
    # (config key 'keyframes.cut_share' until 2026-12-07); 1 = never
    cut_share: float = field(default=0.35, metadata={"range": (0.05, 1.0)})


@dataclass
class TrackingOptions:
    # follow persons from frame to frame (video only): stable ids, bridged misses, each labelled pixel a person's
    enabled: bool = True
    # frames a person keeps its id (and stays drawn at its predicted box) without a detection
    max_missed: int = field(default=5, metadata={"range": (0, 100)})
    # a detection overlapping a track's predicted box by at least this IoU can continue it
    match_iou: float = field(default=0.2, metadata={"range": (0.01, 1.0)})
    # detections scoring below this are matched second, to the tracks the confident ones left
    high_score: float = field(default=0.6, metadata={"range": (0.0, 1.0)})
    # how far a detector box may be off the person, as a share of its height (Kalman measurement noise): higher
    # holds boxes, and the labels in them, steadier; lower follows each detection more closely
    box_noise: float = field(default=1.5, metadata={"range": (0.01, 10.0)})
    # each person's motion is measured by the optical flow of its pixels (DIS), so a box held steady against the
    # detector's jitter still follows the person: how far the flow may be off that motion per frame, as a share
    # of the box height; 0 = no flow (constant velocity only; the default, docs/tracking.md says why)
    flow_noise: float = field(default=0.0, metadata={"range": (0.0, 1.0)})
    # write each person's track id above its box on the video
    draw_ids: bool = False

    def __post_init__(self) -> None:
        if self.draw_ids and not self.enabled:
            raise ConfigError("track ids (--track-ids, tracking.draw_ids) need tracking, which is off",
                              hint="drop --no-tracking (tracking.enabled: false) or --track-ids")


@dataclass
class BodyPixOptions:
    # probability above which a pixel belongs to a person
    person_threshold: float = field(default=0.5, metadata={"range": (0.01, 0.99)})


@dataclass
class CihpLiteOptions:
    """Settings of the ``parsers.cihp-lite`` config section."""

    # crops are scaled to this height (aspect kept, sides padded to a multiple of 32) for the segmenter
    material_height: int = field(default=640, metadata={"range": (64, 2048)})
    # > 0: the segmenter input is at most this many times the crop's height (small crops stay small); 0: always
    # material_height
    material_upscale: float = field(default=2.0, metadata={"range": (0.0, 16.0)})
    # a segmenter channel counts when its probability reaches this (the author's demo: 0.5)
    material_threshold: float = field(default=0.5, metadata={"range": (0.01, 0.99)})
    # pixels of the person mask this close to its border (crop pixels) with no material are "edge": BodyPix's
    # upsampled stride-16 mask bleeds about this far past the person
    edge_px: int = field(default=8, metadata={"range": (0, 64)})
    # BodyPix: probability above which a pixel belongs to a person
    person_threshold: float = field(default=0.5, metadata={"range": (0.01, 0.99)})


def _offset(default: float) -> float:
    """A field of `ClassOffsets`: a number added to one logit, between -10 and 10."""
    return field(default=default, metadata={"range": (-10.0, 10.0)})


@dataclass
class ClassOffsets:
    """Added to cihp-net's logit of each garment type (`labels.FINE_CLASSES`, in this order) before the argmax, on
    the crops where the segmenter's materials apply: the classes' priors calibrated on photos the network did not
    learn from. The defaults were chosen on the 4-fold held-out logits of the training recipe, for pooled garments
    mIoU (docs/garments.md, "Class offsets")."""

    background: float = _offset(1.25)
    hat: float = _offset(0.0)
    hair: float = _offset(-1.0)
    sunglasses: float = _offset(0.0)
    upper: float = _offset(0.0)
    coat: float = _offset(0.0)
    dress: float = _offset(0.5)
    skirt: float = _offset(0.0)
    pants: float = _offset(0.25)
    socks: float = _offset(0.0)
    shoes: float = _offset(-0.5)
    scarf: float = _offset(0.0)
    gloves: float = _offset(0.0)
    skin: float = _offset(-1.0)


@dataclass
class CihpNetOptions:
    """Settings of the ``parsers.cihp-net`` config section."""

    # the multiclass segmenter packs crops onto as few calls as fit while a cell keeps at least this share of the
    # rows of real pixels in a crop (an enlarged crop has fewer than its height)
    segmenter_detail: float = field(default=0.7, metadata={"range": (0.05, 1.0)})
    # the same for the crops of frames at least ``wide_frame_width`` wide (0 = none): cameras over crowds, whose
    # small people need finer cells for their garments (more segmenter calls a frame)
    wide_segmenter_detail: float = field(default=1.0, metadata={"range": (0.05, 1.0)})
    wide_frame_width: int = field(default=1280, metadata={"range": (0, 100_000)})
    # a crop where BodyPix's person probability stays below this everywhere is left unlabelled: the detector's box
    # holds no person (a traffic cone, a bin), which the network, trained on crops of people only, cannot tell; 0 = off
    min_person_probability: float = field(default=0.3, metadata={"range": (0.0, 1.0)})
    # a pixel where BodyPix's person probability is below this is background whatever the network says: the network
    # has only seen crops cut tight around a person and fills a loose crop's signs and bushes with clothes; 0 = off
    min_pixel_person_probability: float = field(default=0.15, metadata={"range": (0.0, 1.0)})
    # the network also sees each crop in a mirror and the two answers are averaged (a second network pass)
    mirror: bool = False
    # the multiclass segmenter says which pixels are hair, skin, clothes or background, the network only which
    # garment (it draws hair and skin edges worse than the segmenter it is given); off = the network's own argmax
    segmenter_materials: bool = True
    # ... for crops the segmenter saw at least this many rows tall: on smaller people (its cells are coarse) the
    # network, which trained on small views too, does better alone
    segmenter_materials_min_rows: int = field(default=128, metadata={"range": (0, 256)})
    # the models' outputs, drawn at most about 256 rows tall, are upsampled to a larger crop along the crop's own
    # edges (a guided filter) instead of bilinearly: sharper label edges on people seen large
    edge_guided: bool = True
    class_offsets: ClassOffsets = field(default_factory=ClassOffsets)


@dataclass
class M2fpOptions:
    """Settings of the ``parsers.m2fp`` config section."""

    # eager (PyTorch) or onnx (ONNX Runtime; the graph is exported once per checkpoint and cached)
    backend: str = field(default="eager", metadata={"choices": ("eager", "onnx")})
    # dynamic INT8 quantization of the linear layers (transformer and heads); the backbone stays float
    int8: bool = False
    # m2fp: rescale each image to this height before packing; 0 = as given (the ROI stage already scales crops)
    person_height: int = field(default=0, metadata={"range": (0, 4096)})
    # m2fp: scale the packed canvas so its short side is this; 640 is ModelScope's whole-frame resize; 0 = as is
    input_short_side: int = field(default=0, metadata={"range": (0, 4096)})
    # m2fp: cap on the canvas' long side when input_short_side scales it (ModelScope: 1333)
    max_size: int = field(default=1333, metadata={"range": (32, 8192)})
    # auto (the checkpoint's parsing_on / semantic_on), semantic (softmax x sigmoid) or parsing (instances)
    postprocess: str = field(default="auto", metadata={"choices": ("auto", "semantic", "parsing")})
    # parsing: minimum part-instance score pasted into the label map; 0 = the checkpoint's parsing_ins_score_thr
    score_threshold: float = field(default=0.0, metadata={"range": (0.0, 1.0)})
    # post-process at full input resolution like ModelScope (slower); default: at 1/4, then resize the scores
    exact_postprocess: bool = False
    # m2fp-single: crops per forward pass
    batch_size: int = field(default=8, metadata={"range": (1, 256)})
    # eager backend: run convolutions in channels-last memory format
    channels_last: bool = True
    # eager backend: fp32, or bf16 autocast (backbone and transformer decoder; the pixel decoder stays fp32)
    precision: str = field(default="fp32", metadata={"choices": ("fp32", "bf16")})
    # folder for exported ONNX files; empty = <vidparse model cache>/m2fp-onnx
    onnx_cache: str = ""

    def check_device(self, device: str) -> None:
        """A `ConfigError` where this backend cannot run on ``device``: the onnx backend runs on the CPU only."""
        if self.backend == "onnx" and device != "cpu":
            raise ConfigError(f"--device {device}: m2fp's onnx backend runs on the CPU",
                              hint="use parsers.m2fp.backend: eager with a GPU device, or --device cpu")


# A parser backend's options by model name (`stages/parsers`' BACKENDS has the same names).
PARSER_OPTIONS: dict[str, type] = {"bodypix": BodyPixOptions, "cihp-lite": CihpLiteOptions, "cihp-net": CihpNetOptions,
                                   "m2fp": M2fpOptions, "m2fp-single": M2fpOptions}


def check_model(name: str) -> str:
    """``name`` if it names a parser, else a `ModelError` listing the ones there are."""
    if name not in PARSER_OPTIONS:
        raise ModelError(f"unknown model '{name}'", hint=f"choose one of: {', '.join(PARSER_OPTIONS)}")
    return name
