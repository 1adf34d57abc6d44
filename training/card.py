"""The model card written beside trained weights: data, licenses, the command that made them, their scores."""

from __future__ import annotations

import logging
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vidparse.evaluation.runs import ImageReport
from vidparse.model_store import MODEL_CARD, sha256_of
from vidparse.training.fit import TrainSettings, uses_bfloat16

log = logging.getLogger(__name__)

FROZEN_MODELS = """\
| model | role | license |
|---|---|---|
| BodyPix 2.0 MobileNetV1 0.50 (Google, via keijiro/BodyPixSentis) | person mask, 24 body parts (left/right) | Apache-2.0 |
| MediaPipe selfie multiclass 256x256 (Google) | hair, body skin, face skin, clothes, accessories | Apache-2.0 |
| FastestDet (dog-qiuqiu) | the person box each crop is cut around | BSD-3-Clause |
"""
DATA_LICENSES = {"ccp": "Clothing Co-Parsing (github.com/bearpaw/clothing-co-parsing), Apache-2.0"}


@dataclass
class TrainingRecord:
    command: str
    images: Path
    label_set: str
    photos: int
    examples: int
    settings: TrainSettings
    seconds: float
    folds: int
    scores: dict[str, ImageReport]  # k-fold, by scheme; empty without k-fold


def _score_table(report: ImageReport) -> str:
    rows = [f"| {c.name} | {'n/a' if c.iou is None else f'{100 * c.iou:.1f}'} |" for c in report.classes]
    miou = "n/a" if report.miou is None else f"{100 * report.miou:.1f}"
    return "\n".join([f"**{report.scheme}** (mIoU {miou})", "", "| class | IoU % |", "|---|---:|", *rows])


def _scores_section(record: TrainingRecord) -> str:
    if not record.scores:
        return "## Scores\nk-fold cross-validation was not run (`--folds 0`)."
    tables = "\n\n".join(_score_table(report) for report in record.scores.values())
    return f"""## Scores: {record.folds}-fold cross-validation on the training photos
Each fold's network is trained on the other folds and scored on its held-out photos: the full-size view, its logits
upsampled into the photo, the confusion pooled over all held-out photos. Crops come from the
detector box that best matches the labelled person, or from the label's bounds where the detector finds none.
The labels are made as the parser makes them, with its default class offsets (`parsers.cihp-net.class_offsets`,
chosen for the shipped recipe's networks on ccp-train): for weights trained on other photos or with other settings,
`benchmarks/class_offsets.py` chooses offsets of their own on the same held-out photos.

{tables}"""


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module says (the architecture is printed beside it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "an unnamed CPU"


def card_path(weights: Path) -> Path:
    return weights.with_name(MODEL_CARD)


def write_card(weights: Path, record: TrainingRecord) -> Path:
    settings = record.settings
    scores = _scores_section(record)
    precision = "bfloat16 convolutions" if uses_bfloat16(settings) else "float32"
    known = DATA_LICENSES.get(record.label_set)
    # the label set says how the photos are labelled, not whose they are
    data_license = (f"{known} when the photos are that dataset's (as ccp-train's are); otherwise their own license"
                    if known else "the photos' own license")
    text = f"""# cihp-net weights: `{weights.name}`

A small U-Net (training/network.py) that turns the outputs of frozen models on a person crop into garment types
(background, hat, hair, sunglasses, upper, coat, dress, skirt, pants, socks, shoes, scarf, gloves, skin); the
parser (stages/parsers/cihp_net.py) turns those into CIHP's 20 classes with BodyPix's body sides.

- sha256: `{sha256_of(weights)}`, {weights.stat().st_size / 1e6:.2f} MB
- made by: `{record.command}`
- data: {record.photos} labelled photos in `{record.images}` (label set `{record.label_set}`), two views each
  ({record.examples} examples): the photo as it is and scaled down to a 48-160 pixel person
- training: {settings.epochs} epoch{'' if settings.epochs == 1 else 's'}, batch {settings.batch_size}, AdamW lr {settings.learning_rate} (one-cycle),
  weight decay {settings.weight_decay}, cross-entropy with class weights of pixel share to the power
  -{settings.class_weight_power}, seed {settings.seed}, {precision}; {record.seconds / 60:.1f} minutes in
  all on {cpu_name()} ({platform.machine()}, PyTorch kernels for {torch.backends.cpu.get_cpu_capability()}); the
  same command makes these exact bytes again only on a CPU with the same kernels and precision (others round
  differently, and the network comes out about as different as another seed's)

## Licenses
- training data: {data_license}
- frozen models whose outputs are the network's input (needed at run time; `vidparse models pull cihp-net`):

{FROZEN_MODELS}
{scores}
"""
    path = card_path(weights)
    earlier = path.read_text(errors="replace") if path.is_file() else ""
    if (described := re.match(r"# cihp-net weights: `(.+)`", earlier)) and described[1] != weights.name:
        log.warning("%s described %s and now describes %s: keep weights you trained in folders of their own", path,
                    described[1], weights.name)
    path.write_text(text)
    return path
