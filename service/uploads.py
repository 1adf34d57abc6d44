"""Uploads: copied to a file of the server's naming under a size limit, then sniffed by content (PIL, PyAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from starlette.datastructures import UploadFile

from vidparse.errors import BadInputError
from vidparse.service.errors import ApiError
from vidparse.stages.images import load_upright
from vidparse.stages.source import StreamInfo, probe

CHUNK = 1 << 20
MB = 1 << 20


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
        raise ApiError(400, "the upload is empty", "send the file as the multipart field 'file'")
    return target


def read_photo(path: Path) -> np.ndarray:
    """The photo as BGR, upright; 415 when PIL cannot read it as an image."""
    try:
        return load_upright(path)
    except BadInputError as exc:
        raise ApiError(415, "the upload is not an image PIL can read", "send a jpg, png, webp, bmp or tiff") from exc


def probe_video(path: Path) -> StreamInfo:
    """What PyAV finds in an uploaded video; 415 when it holds no decodable video."""
    try:
        return probe(str(path))
    except BadInputError as exc:
        raise ApiError(415, "the upload is not a video PyAV can read", exc.hint or "send an mp4, mkv, avi or mov") from exc
