"""What a batch reads: files, folders (their videos), glob patterns and ``--list`` files (one input a line)."""

from __future__ import annotations

import glob
from pathlib import Path

from vidparse.batch.manifest import Record

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".flv", ".wmv"}


def expand(inputs: list[str], list_file: Path | None, outdir: Path | None = None) -> tuple[list[str], list[Record]]:
    """Inputs in order, each once (a file by any spelling), leaving out what a folder or a pattern finds in
    ``outdir`` (a batch's outputs are not inputs of its rerun); and a failed record for each list
    that cannot be read and each folder or pattern that finds nothing (the rest goes on)."""
    problems: list[Record] = []
    names = list(inputs)
    if list_file is not None:
        try:
            lines = list_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            problems.append(Record(input=str(list_file), state="failed",
                                   error=f"input list {list_file} cannot be read: {reason}"))
        else:
            names += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    found: dict[str, str] = {}  # the same file by any spelling -> its first spelling
    outputs = outdir.resolve() if outdir is not None else None
    for name in names:
        matched = _one(name)
        folder = Path(name).resolve() if "://" not in name and Path(name).is_dir() else None
        if not matched:
            what = f"folder {name} holds no video" if folder else f"pattern {name} matches no file"
            problems.append(Record(input=name, state="failed", error=what))
        # a folder or a pattern (a recursive one included) finds the batch's own outputs too: they are left out
        expanded = folder is not None or ("://" not in name and not Path(name).exists() and glob.has_magic(name))
        inner = outputs if expanded and outputs is not None and outputs != folder else None
        for url in matched:
            key = url if "://" in url else str(Path(url).resolve())
            if inner is None or not Path(key).is_relative_to(inner):
                found.setdefault(key, url)
    return list(found.values()), problems


def _one(name: str) -> list[str]:
    if "://" in name:
        return [name]
    path = Path(name)
    if path.is_dir():
        return _videos_in(path)
    if not path.exists() and glob.has_magic(name):
        # a folder it matches is taken as a folder given by name is (as the shell's expansion of the pattern would be)
        return [video for match in sorted(glob.glob(name, recursive=True))
                for video in (_videos_in(Path(match)) if Path(match).is_dir() else [match])]
    return [name]  # a file, or a missing one: its probe records why it failed


def _videos_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
