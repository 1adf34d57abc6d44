"""Image and ground-truth label folders: pairs matched by file stem, read and checked."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from vidparse.errors import BadInputError
from vidparse.stages.images import IMAGE_SUFFIXES, shown_turned, upright_size
from vidparse.stages.types import LabelSet

log = logging.getLogger(__name__)
# A label map's value for pixels left unlabelled (LIP's and VOC's boundaries): the class tables send it to no class,
# so it is neither scored nor trained on.
UNLABELLED = 255



@dataclass(frozen=True)
class Sample:
    name: str
    image_path: Path
    label_path: Path


def _folder(path: Path, what: str) -> Path:
    if not path.exists():
        raise BadInputError(f"{what} folder {path} does not exist", hint="check the path")
    if not path.is_dir():
        raise BadInputError(f"{what} folder {path} is not a folder", hint=f"give the folder that holds the {what}")
    return path


def find_samples(images_dir: Path, labels_dir: Path) -> list[Sample]:
    """Every image in ``images_dir`` with its label PNG of the same stem in ``labels_dir`` (either suffix's case).
    The two may be one folder: a PNG beside a photo of its stem is that photo's label map."""
    entries = sorted(_folder(images_dir, "images").iterdir())
    labels = {p.stem: p for p in _folder(labels_dir, "labels").iterdir() if p.suffix.lower() == ".png"}
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if images_dir.resolve() == labels_dir.resolve():
        photos = {p.stem for p in images if p.suffix.lower() != ".png"}
        if own := next((p for p in images if p.suffix.lower() == ".png" and p.stem not in photos), None):
            raise BadInputError(f"{own} would be its own label map: images and labels are one folder",
                                hint="keep the label PNGs in a folder of their own, named as their images")
        images = [p for p in images if p.suffix.lower() != ".png"]
    if not images:
        raise BadInputError(f"no images in {images_dir}", hint=f"expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    stems: dict[str, Path] = {}
    for path in images:
        if (twin := stems.setdefault(path.stem, path)) is not path:
            raise BadInputError(f"two images in {images_dir} are named {path.stem}: {twin.name} and {path.name}",
                                hint="one label map goes with one image: keep one of them")
    if nested := [p.name for p in entries if p.is_dir()]:
        log.warning("%s: %d subfolder%s not searched (%s): images are read from the folder itself", images_dir,
                    len(nested), "" if len(nested) == 1 else "s", ", ".join(nested[:3]))
    samples = [Sample(p.stem, p, labels.get(p.stem, labels_dir / f"{p.stem}.png")) for p in images]
    missing = [s for s in samples if not s.label_path.is_file()]
    unused = sorted(set(labels) - set(stems))
    if missing:
        raise BadInputError(f"{len(missing)} of {len(samples)} images have no label map, first {missing[0].image_path.name}",
                            hint=f"put {missing[0].label_path.name} (class indices, one channel) in {labels_dir}"
                                 + _named_otherwise([labels[stem].name for stem in unused]))
    if unused:
        log.warning("%s: %d label map%s without an image (%s): not used", labels_dir, len(unused),
                    "" if len(unused) == 1 else "s", ", ".join(f"{stem}.png" for stem in unused[:3]))
    return samples


def _named_otherwise(names: Sequence[str]) -> str:
    """The hint's word on the label PNGs that no image's stem names (the maps, likely, named another way)."""
    if not names:
        return ""
    return (f"; it holds {len(names)} PNG{'' if len(names) == 1 else 's'} named as no image ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''}): a label map takes its image's name")


def read_sample(sample: Sample, label_set: LabelSet) -> tuple[np.ndarray, np.ndarray]:
    """The BGR image and its label map, checked against each other and against ``label_set``."""
    upright_size(sample.image_path, decoded=True)  # a truncated JPEG fails here; OpenCV would read what it holds
    image = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)  # turned upright by its EXIF orientation
    if image is None:
        raise BadInputError(f"image {sample.image_path} is not readable", hint="give JPEG or PNG images")
    return image, read_labels(sample, label_set, (image.shape[1], image.shape[0]))


# Label maps that use no class at or above this many are more likely CIHP's (20 classes) than CCP's (59).
CIHP_CLASSES = 20


def check_labels(samples: Sequence[Sample], label_set: LabelSet) -> int:
    """Every label map read and checked against its image's size (from the header) and ``label_set``: a mistake
    found before the slow work starts; maps that look like another label set's are warned of. Returns the highest
    class seen."""
    highest = [highest_class(read_labels(sample, label_set, upright_size(sample.image_path))) for sample in samples]
    if label_set.name == "ccp":
        _warn_of_cihp_like_maps(samples, highest, label_set)
    return max(highest)


def _warn_of_cihp_like_maps(samples: Sequence[Sample], highest: Sequence[int], label_set: LabelSet) -> None:
    """Warn of CCP label maps that label a person with CIHP's classes only (a CCP person has skin, class 41): the
    whole folder, or the maps of another label set mixed in with CCP's."""
    folder = samples[0].label_path.parent
    if max(highest) < CIHP_CLASSES:
        log.warning("the label maps in %s use no class above %d, as CIHP's would: check --label-set (ccp has %d)",
                    folder, max(highest), len(label_set))
        return
    cihp_like = [sample.label_path.name for sample, top in zip(samples, highest) if 0 < top < CIHP_CLASSES]
    if cihp_like:
        log.warning("%d of the %d label maps in %s use no class above %d, as CIHP's would (%s%s): check --label-set "
                    "(ccp has %d), and that the folder holds maps of one label set", len(cihp_like), len(samples),
                    folder, CIHP_CLASSES - 1, ", ".join(cihp_like[:3]), ", ..." if len(cihp_like) > 3 else "",
                    len(label_set))


def read_labels(sample: Sample, label_set: LabelSet, image_size: tuple[int, int]) -> np.ndarray:
    """``sample``'s label map, checked: one channel, the upright image's (width, height), classes of ``label_set``."""
    width, height = image_size
    try:
        with warnings.catch_warnings():  # PIL's warning for a map as large as the photos vidparse reads
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(sample.label_path) as label_image:
                if label_image.mode not in ("L", "P"):
                    raise BadInputError(f"label map {sample.label_path} is {label_image.mode}, not one channel of "
                                        "class indices", hint="label PNGs hold one class index per pixel (mode L or P)")
                labels = np.array(label_image)
    except Image.DecompressionBombError as exc:  # larger than any photo vidparse reads, so larger than its photo
        raise BadInputError(f"label map {sample.label_path} is more than {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} "
                            f"megapixels but its image is {width}x{height}",
                            hint="labels must match their image pixel for pixel") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInputError(f"label map {sample.label_path} is not a readable PNG", hint="re-export it") from exc
    if labels.shape != (height, width):
        swapped = _why_swapped(sample.image_path) if labels.shape == (width, height) else ""
        raise BadInputError(f"label map {sample.label_path} is {labels.shape[1]}x{labels.shape[0]} but its image is "
                            f"{width}x{height}{swapped}", hint="labels must match their image pixel for pixel")
    if (highest := highest_class(labels)) >= len(label_set):
        raise BadInputError(f"label map {sample.label_path} holds class {highest}, but label set "
                            f"'{label_set.name}' has {len(label_set)} classes",
                            hint=f"check --label-set ({UNLABELLED} marks pixels left unlabelled)")
    return labels


def highest_class(labels: np.ndarray) -> int:
    """The highest class of a label map, its unlabelled pixels (UNLABELLED) aside; 0 where there is none."""
    highest = int(labels.max(initial=0))
    return int(labels[labels != UNLABELLED].max(initial=0)) if highest == UNLABELLED else highest


def _why_swapped(image_path: Path) -> str:
    """Why a label map has its image's width and height swapped: the photo is shown turned (its EXIF orientation),
    or the map itself is transposed."""
    if shown_turned(image_path):
        return " (the photo is shown turned, as its EXIF orientation says)"
    return " (width and height swapped: the label map is transposed)"
