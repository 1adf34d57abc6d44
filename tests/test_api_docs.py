"""The Python examples of the README and docs/api.md run as written, with the real models, a CIHP photo as
``photo.jpg`` and a 5-frame cut of vtest as ``clip.avi`` in the working folder."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO, VTEST, cut_clip

PAGES = ("README.md", "docs/api.md")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.S | re.M)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_the_examples_run(page: str, shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(REPO / page)
    assert len(blocks) >= 2, f"{page} has its Python examples"
    shutil.copy(shared / "data" / "cihp" / "images" / "0002190.jpg", tmp_path / "photo.jpg")
    cut_clip(VTEST, tmp_path / "clip.avi", 5)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{page}, Python block {number}", "exec"), namespace)  # noqa: S102 - our own docs
    written = sorted(p.name for p in tmp_path.iterdir())
    assert set(written) >= {"photo.jpg", "clip.avi"}
    if page == "docs/api.md":
        assert {"photo_parsed.png", "clip_parsed.mp4", "parsed", "parsed_stats"} <= set(written)
        assert sorted(os.listdir(tmp_path / "parsed")) == ["clip.mp4", "clip_2.mp4"]
