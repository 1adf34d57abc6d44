"""Still images as input: one photo, a folder of photos, or a pattern (``frames/%06d.png``, ``'*.jpg'``).

Every image is read upright (its EXIF orientation applied) and placed at the top left of a canvas as large as the
largest image of the set, so that images of different sizes share the pipeline's fixed frame slots; the frame
names its picture's size (``Frame.picture``), so that the parser sees the image alone. The output crops each result
back to its image's own size. An ordered set written to a video becomes frames at
``FRAME_RATE``.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError, features

from vidparse.errors import BadInputError, BadOutputError, ConfigError, file_in_the_way
from vidparse.names import unique_names
from vidparse.stages.source import StreamInfo
from vidparse.stages.types import Frame

log = logging.getLogger(__name__)


def _pil_reads_avif() -> bool:
    try:
        return bool(features.check_module("avif"))  # Pillow 11.3+ wheels; a Pillow before 11.2 knows no such module
    except ValueError:
        return False


# AVIF (a phone's or a browser's photo) where Pillow reads it: else FFmpeg decodes it as a one-frame video
AVIF_SUFFIXES = (".avif",) if _pil_reads_avif() else ()
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", *AVIF_SUFFIXES)
FRAME_RATE = Fraction(25)  # an image sequence written as video, as FFmpeg's image2 demuxer reads it
_PRINTF = re.compile(r"%(0?\d*)d")
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
NAME_MAX = 255  # bytes in a file name, on Linux's and macOS's file systems
# The largest side each format holds (PNG's, TIFF's and BMP's are past any photo PIL reads): suffix -> (name, side)
MAX_SIDES = {".webp": ("WebP", 16383), **dict.fromkeys((".jpg", ".jpeg", ".jpe", ".jfif"), ("JPEG", 65535))}


def is_image_input(spec: str) -> bool:
    """Whether ``spec`` names images rather than a video: an image file, a folder, a %d or glob pattern of images.
    An animated PNG or AVIF is a video: FFmpeg decodes its frames, as it does a GIF's (not an animated WebP's)."""
    if "://" in spec or not spec.strip():  # Path("") is the current folder
        return False
    path = Path(spec)
    if path.is_dir():
        return True
    if path.suffix.lower() in VIDEO_WHEN_ANIMATED and path.is_file() and is_animated(path):
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_sequence(spec: str) -> bool:
    """Whether an image input names the frames of one sequence (a pattern, as ``image_files`` reads one), not photos
    each its own picture (a photo, a folder)."""
    path = Path(spec)
    return not path.is_dir() and not path.is_file() and bool(_PRINTF.search(path.name) or glob.has_magic(spec))


def image_files(spec: str) -> list[Path]:
    """The image files ``spec`` names, in order (numbers of a %d pattern in numeric order, names otherwise)."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p))
    if _PRINTF.search(path.name):
        pattern = re.compile("".join(
            f"(\\d{{{max(1, int(part or 0))},}})" if i % 2 else re.escape(part)
            for i, part in enumerate(_PRINTF.split(path.name))))
        matches = [(m, p) for p in path.parent.glob("*") if (m := pattern.fullmatch(p.name))]
        return [p for _, p in sorted(matches, key=lambda item: tuple(int(g) for g in item[0].groups()))]
    if glob.has_magic(spec):
        return sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
    return [path] if path.is_file() else []


@contextmanager
def _opened(path: Path, formats: tuple[str, ...] | None = None) -> Iterator[Image.Image]:
    """The image as PIL opens it; one past PIL's decompression-bomb limit is refused with one line, and PIL's
    warning for one past half that limit (such photos are read) is not shown, nor its warnings of damaged EXIF data
    (``Corrupt EXIF data``, ``Tag data larger than file``: the photo is read, as a viewer shows it, without what
    could not be read), which came out as two lines each naming a file of PIL's, once as the photo was listed and
    once as it was read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        if path.stat().st_size == 0:  # PIL says it "cannot identify image file": as a video's, say what it is
            raise BadInputError(f"input {path} is empty (0 bytes)", hint="the file was not written completely")
        try:
            image = Image.open(path, formats=formats)
        except Image.DecompressionBombError as exc:
            limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
            raise BadInputError(f"input {path} is a photo of more than {limit:.0f} megapixels, more than vidparse reads",
                                hint=f"scale it down first, e.g.: ffmpeg -i {path} -vf scale=iw/2:-2 smaller.jpg"
                                ) from exc
        with image:
            yield image


# Formats whose files may hold several frames, or pages (a multi-page TIFF: a scan, a fax); a JPEG with several
# images (MPO: a phone's depth or gain map) is a photo
PAGED_SUFFIXES = (".tif", ".tiff")
ANIMATED_SUFFIXES = (".png", ".webp", *PAGED_SUFFIXES, *AVIF_SUFFIXES)
VIDEO_WHEN_ANIMATED = (".png", *AVIF_SUFFIXES)  # FFmpeg decodes their frames


def is_animated(path: Path) -> bool:
    """Whether an image file holds several frames (an APNG, an animated WebP) or pages (a TIFF); False for one PIL
    cannot read."""
    if path.suffix.lower() not in ANIMATED_SUFFIXES:
        return False
    try:
        with _opened(path) as image:
            return bool(getattr(image, "is_animated", False))
    except (UnidentifiedImageError, OSError, BadInputError):
        return False


def upright_size(path: Path, decoded: bool = False) -> tuple[int, int]:
    """(width, height) of an image as shown: EXIF quarter turns swap the stored size. Reads the header only, or
    with ``decoded`` the whole file too (a JPEG at an eighth of its size: about a millisecond), so that a truncated
    or damaged image is found now rather than when its turn comes."""
    try:
        with _opened(path) as image:
            width, height = image.size
            turned = _quarter_turned(image)
            if decoded:
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInputError(f"input {path} is not a readable image ({exc})",
                            hint="give jpg, png, webp, bmp or tiff files (a video needs its own extension: .mp4, "
                                 ".mkv...)") from exc
    return (height, width) if turned else (width, height)


def shown_turned(path: Path) -> bool:
    """Whether an image is shown a quarter turn from how it is stored (its EXIF orientation is 5 to 8); False for
    one that cannot be read."""
    try:
        with _opened(path) as image:
            return _quarter_turned(image)
    except (UnidentifiedImageError, OSError, BadInputError):
        return False


def _quarter_turned(image: Image.Image) -> bool:
    return image.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNS


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grey (PIL's mode I;16, or I holding values past 255), which PIL's RGB conversion clips at 255 (a
    white photo), scaled to 8 bits; float grey of 0-1 (mode F, as scientific TIFFs hold), which it would make black,
    scaled to 0-255; other images as they are."""
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return image
    grey = np.asarray(image).astype(np.int64)
    if image.mode == "I" and grey.max(initial=0) <= 255:
        return image
    return Image.fromarray((np.clip(grey, 0, 65535) // 257).astype(np.uint8), "L")


def _flattened(image: Image.Image) -> Image.Image:
    """An image with transparency (an alpha channel, or a palette's or a colour key's transparent entry) laid on
    white, as a page shows it: PIL's RGB conversion drops the alpha and brings back whatever colours lie under it (a
    cutout's erased background, its people too); other images as they are."""
    if image.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _in_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """An RGB, CMYK or grey image with a colour profile of its own (a phone's Display P3 photo, a print's CMYK)
    converted to sRGB, as a colour-managed viewer shows it: the annotated copy is written without a profile, as
    sRGB, and the P3 photo's colours came out dull; others, and a profile littleCMS cannot read, as they are."""
    if not icc or image.mode not in ("RGB", "CMYK", "L"):
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if image.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(profile).lower():
            return image  # most cameras' (sRGB IEC61966-2.1): converting a 12-megapixel one took 0.2-0.5 s
        return ImageCms.profileToProfile(image, profile, SRGB, outputMode="RGB") or image  # None: done in place
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image


def load_upright(path: Path, formats: tuple[str, ...] | None = None) -> np.ndarray:
    """The image as HxWx3 BGR uint8, turned as its EXIF orientation says; ``formats``: the PIL formats it may be
    in (None: any)."""
    try:
        with _opened(path, formats) as image:
            upright = _flattened(_eight_bit(ImageOps.exif_transpose(image)))
            rgb = _in_srgb(upright, image.info.get("icc_profile")).convert("RGB")
    except FileNotFoundError as exc:
        raise BadInputError(f"input {path} does not exist (any more)", hint="check the path") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInputError(f"input {path} is not a readable image ({exc})",
                            hint="the file may be truncated or damaged") from exc
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def warn_of_other_files(folder: Path) -> None:
    """A folder input is read for its photos: its other files (a video, a GIF, notes; hidden ones aside) are named
    once rather than left out unsaid."""
    others = sorted(p.name for p in folder.iterdir() if p.is_file() and not is_image_path(p) and not p.name.startswith("."))
    if others:
        log.warning("input %s: %d file%s that are not photos left out (%s%s): a folder is read for its photos; give "
                    "a video or a GIF as an input of its own", folder, len(others), "" if len(others) == 1 else "s",
                    ", ".join(others[:3]), ", ..." if len(others) > 3 else "")


@dataclass(frozen=True)
class ImageSet:
    """The images of one input, in order, with their upright sizes."""

    spec: str
    paths: tuple[Path, ...]
    sizes: tuple[tuple[int, int], ...]  # (width, height) each
    unreadable: int = 0  # image files left out when the set was listed

    @classmethod
    def find(cls, spec: str) -> ImageSet:
        paths = image_files(spec)
        if not paths and not glob.has_magic(spec) and not _PRINTF.search(spec) and not Path(spec).exists():
            raise BadInputError(f"input {spec} does not exist", hint="check the path")
        if not paths:
            raise BadInputError(f"input {spec} names no image files",
                                hint=f"give a photo, a folder of photos or a pattern ({', '.join(IMAGE_SUFFIXES)})")
        if Path(spec).is_dir():
            warn_of_other_files(Path(spec))
        for path in filter(is_animated, paths):
            if path.suffix.lower() in PAGED_SUFFIXES:
                log.warning("input %s has several pages: only its first page is parsed", path)
            else:
                log.warning("input %s is animated: only its first frame is parsed", path)
        if len(paths) == 1:
            return cls(spec, tuple(paths), (upright_size(paths[0]),))
        readable, sizes = [], []
        for path in paths:  # one damaged photo in a folder does not cost the others
            try:
                sizes.append(upright_size(path, decoded=True))
            except BadInputError as exc:
                log.warning("%s: skipped", exc.message)
                continue
            readable.append(path)
        if not readable:
            raise BadInputError(f"input {spec}: none of its {len(paths)} image files is readable",
                                hint="give jpg, png, webp, bmp or tiff files")
        return cls(spec, tuple(readable), tuple(sizes), unreadable=len(paths) - len(readable))

    @property
    def single(self) -> bool:
        return len(self.paths) == 1 and Path(self.spec).is_file()

    @property
    def sequence(self) -> bool:
        return is_sequence(self.spec)

    def output_paths(self, target: Path, masks_dir: Path | None) -> list[tuple[Path, Path]]:
        """Where each image's annotated copy and label PNG are written for ``-o target``. The annotated copy:
        ``target`` itself for a single photo given a file name, else ``target/<the image's name>``. The label PNG:
        ``masks_dir/<stem>.png``, or beside its annotated copy as ``<stem>_labels.png``, where a single photo given a
        file name takes that name's stem (two runs of one photo into two files keep their own labels). A stem that
        repeats (x.jpg and x.png) gets ``_2``, ``_3``... in input order on its label PNG, and on its annotated copy
        too where the whole name repeats (x.jpg from two folders). An annotated copy and a label PNG that would
        still be one file (a photo named like another's label PNG, --masks naming -o's folder for PNG photos) are
        a `ConfigError` naming both photos: nothing is renamed past this rule, nothing written over. A name longer
        than a file name may be (``<stem>_labels.png`` of a photo named 250 bytes) is a `BadOutputError`."""
        single = self.single and bool(target.suffix)
        repeated = {name for name, count in Counter(path.name for path in self.paths).items() if count > 1}
        stems = unique_names([path.stem for path in self.paths])
        annotated = [target if single else target / (stem + path.suffix if path.name in repeated else path.name)
                     for path, stem in zip(self.paths, stems)]
        masks = [masks_dir / f"{stem}.png" if masks_dir is not None
                 else image.with_name(f"{target.stem if single else stem}_labels.png")
                 for stem, image in zip(stems, annotated)]
        for photo, image, mask, size in zip(self.paths, annotated, masks, self.sizes):
            limit = MAX_SIDES.get(image.suffix.lower())
            if limit and max(size) > limit[1]:  # OpenCV's encoder fails, unsaid why, once the photo is parsed
                raise BadOutputError(f"output {image}: {limit[0]} holds at most {limit[1]} pixels a side, photo {photo} "
                                     f"is {size[0]}x{size[1]}", hint="write it as .png")
            for what, path in (("annotated copy", image), ("label PNG", mask)):
                if len(os.fsencode(path.name)) > NAME_MAX:  # found now, not as OSError once the photo is parsed
                    raise BadOutputError(
                        f"photo {photo}'s {what} would be named {path.name}: {len(os.fsencode(path.name))} bytes, more "
                        f"than a file name may have ({NAME_MAX})",
                        hint="shorten the photo's name" + (", or give --masks a folder of its own (label PNGs go "
                                                           "there as <stem>.png)" if what == "label PNG" else ""))
        annotates = {image.resolve(): photo for image, photo in zip(annotated, self.paths)}
        for photo, mask in zip(self.paths, masks):
            if (other := annotates.get(mask.resolve())) is not None:
                raise ConfigError(f"photo {photo}'s annotated copy and its label PNG would both be {mask}"
                                  if other == photo else
                                  f"photos {other} and {photo} would both be written as {mask} (the annotated copy "
                                  "of one, the label PNG of the other)",
                                  hint="give --masks a folder of its own (label PNGs go there as <stem>.png)")
        return list(zip(annotated, masks))

    def info(self) -> StreamInfo:
        """The canvas every image is placed on: as wide and as tall as the largest."""
        return StreamInfo(width=max(w for w, _ in self.sizes), height=max(h for _, h in self.sizes),
                          time_base=1 / FRAME_RATE, frame_rate=FRAME_RATE, frames=len(self.paths),
                          duration_s=float(len(self.paths) / FRAME_RATE), codec="image", has_audio=False)


def check_image_output(spec: str, path: Path) -> None:
    """Fail before any work (before the photos are read) if ``path`` cannot take the annotated images of input
    ``spec``: a file for one photo, else a folder."""
    if path.suffix and not is_image_path(path):
        raise BadOutputError(f"output {path} is neither a video nor an image",
                             hint="give a video (.mp4, .m4v, .mov, .mkv), an image (.jpg, .png, ...) or a folder")
    # a folder or a pattern (several photos, whatever they hold); naming none is said when the photos are listed
    if path.suffix and not Path(spec).is_file() and (listed := len(image_files(spec))):
        raise BadOutputError(f"{listed} images cannot all be written to {path}",
                             hint="give a folder for -o (one annotated image each), or a video such as out.mp4")
    blocked = file_in_the_way(path, path.parent if path.suffix else path)
    if blocked:
        raise blocked


class ImageSource:
    """The source stage for an ``ImageSet``: one frame per image, upright, on the set's canvas."""

    def __init__(self, images: ImageSet, max_frames: int | None = None, resume_at: int = 0) -> None:
        self.images = images
        self.max_frames = max_frames
        self.resume_at = resume_at  # the first image given
        self.skipped_packets = images.unreadable  # photos, here: unreadable, gone or changed
        self.info: StreamInfo | None = None

    def open(self) -> StreamInfo:
        self.info = self.images.info()
        return self.info

    def frames(self) -> Iterator[Frame]:
        assert self.info is not None, "open() first"
        paths = self.images.paths[self.resume_at: self.max_frames]
        for seq, path in enumerate(paths, self.resume_at):
            canvas = np.zeros(self.info.frame_shape, np.uint8)
            try:
                image = load_upright(path)
                if image.shape[1::-1] != self.images.sizes[seq]:
                    raise BadInputError(f"input {path} changed while the run went on (now {image.shape[1]}x"
                                        f"{image.shape[0]}, listed as {self.images.sizes[seq][0]}x"
                                        f"{self.images.sizes[seq][1]})", hint="run it again")
            except BadInputError as exc:  # one photo gone since the set was listed does not cost the others
                if len(self.images.paths) == 1:
                    raise
                log.warning("%s: skipped", exc.message)
                self.skipped_packets += 1
                yield Frame(seq=seq, pts=seq, time_base=self.info.time_base, image=canvas, captured_at=time.time(),
                            picture=(0, 0))
                continue
            canvas[: image.shape[0], : image.shape[1]] = image
            picture = None if image.shape == canvas.shape else image.shape[:2]
            yield Frame(seq=seq, pts=seq, time_base=self.info.time_base, image=canvas, captured_at=time.time(),
                        picture=picture)

    def close(self) -> None:
        pass
