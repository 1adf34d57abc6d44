"""vidparse's errors in the Python API's words: messages and hints are written for the command line ("-o",
"--workers", "give a folder such as -o parsed/"), and an error that leaves the API names the argument or the config
key its caller sets instead ("output", "workers", 'output="parsed/"'), as do the warnings of an API run
(`vidparse.runs.Words`). One wording per message, translated here, so that the CLI's text stays as it is and no
message is written twice."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from vidparse.errors import VidparseError

# The CLI's flags that messages name, as an API caller sets the same: an argument of `vidparse.run`,
# `vidparse.stream` or `Parser`, or a config key (an override such as ``max_memory_mb=900``, or in the config).
API_NAMES = {
    "-o": "output", "--masks": "masks", "--stats": "stats", "--instances": "instances", "--workers": "workers",
    "--model": "model", "--model-dir": "model_dir", "--config": "config", "--device": "device",
    "--max-memory": "max_memory_mb", "--queue-size": "queue_size", "--reconnect-attempts": "live.reconnect_attempts",
    "--track-ids": "tracking.draw_ids", "--no-tracking": "tracking.enabled: false", "--verbose": "DEBUG logging",
}
STREAM_NAMES = {**API_NAMES, "-o": "outputs"}  # `vidparse.stream` takes one output per source
# A flag, and the value it is given where one follows: a path, a number or a name with a digit, a device
FLAG = re.compile(r"(?<![\w-])(-o|--[a-z][a-z-]*)(?![\w-])(?: ([\w.-]*[/\d][\w./-]*|cpu|cuda)(?![\w/]))?")
NUMBER = re.compile(r"-?\d+(\.\d+)?")
# What a flag replaced by the config key it stands beside leaves twice: "K (K)", "K (or K)", "(K, K)"
TWICE = re.compile(r"(?<![\w.])([a-z_][\w.]*(?:: \w+)?) \((?:or )?\1\)|\(([a-z_][\w.]*), \2\)")


def reworded(text: str, names: Mapping[str, str] = API_NAMES) -> str:
    """``text`` with each CLI flag of ``names`` named as the API names it (a value it is given as ``name="value"``),
    and what that leaves twice said once; a command in backticks (`vidparse models pull NAME`) is left as it is."""
    def named(match: re.Match[str]) -> str:
        flag, value = match[1], match[2]
        if flag not in names:  # not vidparse's (Docker's --shm-size), or not an API setting
            return match[0]
        if value is None:
            return names[flag]
        return f"{names[flag]}={value if NUMBER.fullmatch(value) else repr(value)}"

    parts = text.split("`")  # odd parts are quoted commands
    return "`".join(part if index % 2 else TWICE.sub(lambda m: m[1] or f"({m[2]})", FLAG.sub(named, part))
                    for index, part in enumerate(parts))


def in_api_words(error: VidparseError, names: Mapping[str, str] = API_NAMES) -> VidparseError:
    """``error`` itself, its message and hint `reworded`."""
    error.message = reworded(error.message, names)
    error.hint = error.hint and reworded(error.hint, names)
    error.args = (error.message, *error.args[1:])
    return error


@contextmanager
def api_words(names: Mapping[str, str] = API_NAMES) -> Iterator[None]:
    """vidparse's errors raised in the block leave it `in_api_words` (the same error, its traceback kept)."""
    try:
        yield
    except VidparseError as exc:
        in_api_words(exc, names)
        raise
