"""Output names that never collide: what several inputs, or photos sharing a stem, are written as."""

from __future__ import annotations

from collections.abc import Callable, Sequence


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
