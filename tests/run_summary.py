"""Reading the end-of-run summary table that `vidparse run` prints on stderr (tests and benchmarks)."""

from __future__ import annotations


def summary_rows(stderr: str) -> dict[str, str]:
    """The rows of the end-of-run summary table (after its title), name -> value."""
    rows = {}
    for line in stderr[stderr.index("vidparse run"):].splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows
