"""Output names: what several inputs, or photos sharing a stem, are written as without colliding, and the frame PNGs
of --masks and --instances; and `plural`, a count with its noun as messages say it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path


def plural(count: int, noun: str) -> str:
    """``count`` ``noun``s: "1 usable CPU", "2 usable CPUs"."""
    return f"{count} {noun}{'s' if count != 1 else ''}"


def free_name(name: str, taken: Callable[[str], bool]) -> str:
    """``name`` where ``taken`` says it is free, else the first of ``name_2``, ``name_3``... that is."""
    candidate, number = name, 2
    while taken(candidate):
        candidate, number = f"{name}_{number}", number + 1
    return candidate


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` in order, a repeat of a name getting ``_2``, ``_3``... (a suffixed name never taken twice)."""
    taken, seen = set(names), set()
    unique = []
    for name in names:
        candidate = free_name(name, taken.__contains__) if name in seen else name
        seen.add(name)
        taken.add(candidate)
        unique.append(candidate)
    return unique


def frame_png_name(seq: int) -> str:
    return f"{seq:06d}.png"


def frame_numbers(directory: Path) -> list[int]:
    """The frame numbers of the per-frame PNGs (``frame_png_name``) a folder holds already (none if it does not
    exist)."""
    if not directory.is_dir():
        return []
    return [int(path.stem) for path in directory.glob("*.png") if path.stem.isdigit() and len(path.stem) >= 6]
