"""Output names that never collide: what several inputs, or photos sharing a stem, are written as."""

from __future__ import annotations

from collections.abc import Sequence


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` in order, a repeat of a name getting ``_2``, ``_3``... (a suffixed name never taken twice)."""
    taken = set(names)
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        candidate, number = name, seen[name]
        while number > 1 and (candidate := f"{name}_{number}") in taken:
            number += 1
        seen[name] = number
        taken.add(candidate)
        unique.append(candidate)
    return unique
