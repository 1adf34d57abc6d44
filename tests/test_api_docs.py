"""The Python examples of the README and docs/api.md run as written, with the real models, a CIHP photo as
``photo.jpg`` and a 5-frame cut of vtest as ``clip.avi`` in the working folder: inside pytest, and as a user runs
them, a plain script without an ``if __name__ == "__main__":`` guard (a file, ``python -``, ``python -m``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, VTEST, cut_clip

PAGES = ("README.md", "docs/api.md")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.S | re.M)


def examples_folder(shared: Path, folder: Path) -> Path:
    shutil.copy(shared / "data" / "cihp" / "images" / "0002190.jpg", folder / "photo.jpg")
    cut_clip(VTEST, folder / "clip.avi", 5)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_the_examples_run(page: str, shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(REPO / page)
    assert len(blocks) >= 2, f"{page} has its Python examples"
    examples_folder(shared, tmp_path)
    monkeypatch.chdir(tmp_path)
    for number, block in enumerate(blocks, 1):  # each alone, as a reader copies one: its own imports
        exec(compile(block, f"{page}, Python block {number}", "exec"), {})  # noqa: S102 - our own docs
    check_written(page, tmp_path)


def check_written(page: str, folder: Path) -> None:
    written = sorted(p.name for p in folder.iterdir())
    assert set(written) >= {"photo.jpg", "clip.avi"}
    if page == "docs/api.md":
        assert {"photo_parsed.png", "clip_parsed.mp4", "parsed", "parsed_stats"} <= set(written)
        assert sorted(os.listdir(folder / "parsed")) == ["clip.mp4", "clip_2.mp4"]


@pytest.mark.slow
@pytest.mark.parametrize(("page", "how"), [(page, how) for page in PAGES for how in ("file", "stdin")]
                         + [("README.md", "module")])
def test_the_examples_run_as_a_script(page: str, how: str, shared: Path, tmp_path: Path) -> None:
    """The engine's children never import the user's main module: spawn would re-run this unguarded script in every
    worker and source process (as ``__mp_main__``), and each would die starting the engine again while
    bootstrapping. ``module`` (``python -m``) is how a notebook's kernel is seen by spawn: a main module by name."""
    script = "\n".join(python_blocks(REPO / page))
    assert "__main__" not in script, "the examples have no guard"
    folder = examples_folder(shared, tmp_path)
    (folder / "examples.py").write_text(script)
    command = {"file": [sys.executable, "examples.py"], "stdin": [sys.executable, "-"],
               "module": [sys.executable, "-m", "examples"]}[how]
    done = subprocess.run(command, cwd=folder, input=script if how == "stdin" else None, capture_output=True,
                          text=True, timeout=300)  # python -m finds examples.py in the working folder
    assert done.returncode == 0, done.stderr[-3000:]
    assert "died" not in done.stderr and "bootstrapping" not in done.stderr, done.stderr[-3000:]
    assert "clip.avi" in done.stdout if page == "docs/api.md" else re.search(r"^[01] 2 ", done.stdout, re.M), \
        done.stdout  # the stream example printed its frames
    check_written(page, folder)
