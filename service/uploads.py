"""Uploads: copied to a file of the server's naming under a size limit, then sniffed by content (PIL, PyAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from vidparse.errors import BadInputError
from vidparse.service.errors import ApiError
from vidparse.stages.images import AVIF_SUFFIXES, load_upright
from vidparse.stages.source import FrameTooLargeError, InputLimits, StreamInfo, probe

CHUNK = 1 << 20
MB = 1 << 20
# PIL's names (AVIF where Pillow reads it, as `vidparse run` does); no other decoder (EPS, PSD...) is reached
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", *(("AVIF",) if AVIF_SUFFIXES else ()))
PHOTO_FORMAT_NAMES = ", ".join(name.lower() for name in PHOTO_FORMATS)


def too_large(limit_mb: int) -> ApiError:
    return ApiError(413, f"upload larger than {limit_mb} MB", "send a smaller file, or start the server with a larger "
                    "--max-upload-mb")


def save_upload(upload: UploadFile, target: Path, limit_mb: int) -> Path:
    """Copy the upload to ``target`` (the client's filename is never used); 413 past the limit."""
    written = 0
    upload.file.seek(0)
    with target.open("wb") as out:
        while chunk := upload.file.read(CHUNK):
            written += len(chunk)
            if written > limit_mb * MB:
                out.close()
                target.unlink(missing_ok=True)
                raise too_large(limit_mb)
            out.write(chunk)
    if not written:
        target.unlink(missing_ok=True)
        raise ApiError(400, "the uploaded file is empty (0 bytes)", "choose the file again: it may not have been written completely")
    return target


def read_photo(path: Path, max_pixels: int) -> np.ndarray:
    """The photo as BGR, upright; 415 unless it is an image of ``PHOTO_FORMATS``, 413 past ``max_pixels`` (checked
    from its header, before it is decoded)."""
    try:
        with Image.open(path, formats=PHOTO_FORMATS) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise too_many_pixels(max_pixels) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ApiError(415, f"the upload is not an image of {PHOTO_FORMAT_NAMES}", "send one of those") from exc
    if width * height > max_pixels:
        raise too_many_pixels(max_pixels)
    try:
        return load_upright(path, PHOTO_FORMATS)
    except BadInputError as exc:
        raise ApiError(415, "the image cannot be decoded", "the file may be truncated or damaged") from exc


def too_many_pixels(max_pixels: int) -> ApiError:
    return ApiError(413, f"more than {max_pixels} pixels", "send a smaller image or video (serve.max_photo_pixels, "
                    "serve.max_video_pixels)")


def probe_video(path: Path, limits: InputLimits) -> StreamInfo:
    """What PyAV finds in an uploaded or allowed video; 415 when it holds no decodable video in an allowed format,
    413 when its frames are larger than ``limits`` allow."""
    try:
        return probe(str(path), limits=limits)
    except FrameTooLargeError as exc:
        raise too_many_pixels(limits.max_pixels or 0) from exc
    except BadInputError as exc:
        raise ApiError(415, "not a video PyAV can read in an allowed format",
                       "send an mp4, mkv, webm, avi, mov or ts") from exc
