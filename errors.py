"""User-facing failures. The CLI turns each into one line, a hint and its own exit code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# Exit codes that no single error class carries (README, "Exit codes").
UNEXPECTED_EXIT = 7  # the pipeline-failure code: a failure vidparse did not foresee
DEGRADED_EXIT = 8  # finished, every frame written, but workers were replaced or frames written unannotated
STREAMS_FAILED_EXIT = 9  # several inputs: one or more streams (or `vidparse batch` inputs) failed, the others finished
INTERRUPTED_EXIT = 130


class VidparseError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self):  # keep the hint when errors cross process boundaries
        return (type(self), (self.message, self.hint))


class BadInputError(VidparseError):
    """The input cannot be read as video (missing, unreadable, not a video, no video stream)."""

    exit_code = 3


class BadOutputError(VidparseError):
    """The output cannot be written (directory missing or read-only, disk full)."""

    exit_code = 4


class ConfigError(VidparseError):
    """A configuration key is unknown, mistyped or out of range."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, key: str | None = None) -> None:
        super().__init__(message, hint)
        self.key = key  # the dotted config key whose value is wrong, where one is

    def __reduce__(self):
        return (type(self), (self.message, self.hint, self.key))


class ModelError(VidparseError):
    """A model is missing, corrupt or does not fit its configuration (an unknown model name is a ConfigError)."""

    exit_code = 5


def file_in_the_way(path: Path, folder: Path) -> BadOutputError | None:
    """The error for output ``path`` whose missing ``folder`` cannot be made because a file stands where one of its
    folders would be; None when nothing stands in the way (``mkdir -p`` would make it)."""
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if blocking.is_dir():
        return None
    return BadOutputError(f"output {path} cannot be created: {blocking} is a file, not a folder",
                          hint="choose another output path")


def folder_vanished(folder: Path) -> BadOutputError:
    """The error for an output folder removed (``rm -rf``) while the run was writing into it."""
    return BadOutputError(f"the output directory {folder} vanished during the run",
                          hint="what was written into it went with it; write to a directory that stays")


def not_writable(path: Path) -> OSError | None:
    """Why a file could not be written at ``path`` (in a folder that exists), found by trying: permissions, a
    read-only filesystem, a filesystem that takes no new files (sysfs); None when it can be."""
    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            with open(path, "xb"):  # probe, then leave nothing behind until there is something to write
                pass
            path.unlink()
    except OSError as exc:
        return exc
    return None


class StreamLostError(VidparseError):
    """A live stream is gone and no reconnect attempts are left."""

    exit_code = 6


def check_not_overwriting(inputs: Sequence[Path], outputs: Sequence[Path]) -> None:
    """Fail when an output would be written over an input: the same file by any name (a link, another spelling)."""
    def identity(path: Path) -> tuple[int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    sources = {key: path for path in inputs if (key := identity(path))}
    for output in outputs:
        if (key := identity(output)) in sources:
            raise BadOutputError(f"output {output} would overwrite the input {sources[key]}",
                                 hint="write to another file or folder")
