"""Loading ModelScope M2FP folders: config parsing, key reports, clear errors for checkpoints that do not fit."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch

import vidparse
from conftest import run_cli
from vidparse.errors import ModelError
from vidparse.stages.parsers.m2fp import make_random_checkpoint
from vidparse.stages.parsers.m2fp.checkpoint import load_model
from vidparse.stages.parsers.m2fp.config import full_config, read_config


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("m2fp") / "tiny", tiny=True)


def test_random_folder_has_modelscope_layout(tiny_dir):
    document = json.loads((tiny_dir / "configuration.json").read_text())
    model = document["model"]
    assert document["framework"] == "pytorch" and model["type"] == "m2fp"
    for key in ("backbone", "encoder", "decoder", "pretrained", "classes", "num_parsing", "single_human",
                "parsing_ins_score_thr", "parsing_on", "semantic_on", "sem_seg_postprocess_before_inference"):
        assert key in model
    assert "in_features" in model["encoder"]
    checkpoint = torch.load(tiny_dir / "pytorch_model.pt", weights_only=True)
    assert set(checkpoint) == {"model"}
    assert "backbone.stem.conv1.norm.running_mean" in checkpoint["model"]


def test_full_config_is_resnet101():
    config = full_config()
    assert config.backbone.depth == 101 and config.decoder.num_classes == config.num_parsing + 1
    assert full_config(single_human=True).single_human_size == (384, 512)


def test_load_roundtrip(tiny_dir):
    model = load_model(tiny_dir)
    saved = torch.load(tiny_dir / "pytorch_model.pt", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert read_config(tiny_dir).backbone.depth == 50


def _rewrite(folder, source, edit):
    folder.mkdir()
    (folder / "configuration.json").write_text((source / "configuration.json").read_text())
    state = torch.load(source / "pytorch_model.pt", weights_only=True)["model"]
    torch.save({"model": edit(dict(state))}, folder / "pytorch_model.pt")
    return folder


def test_missing_and_mismatched_keys_are_refused(tmp_path, tiny_dir):
    def drop_and_reshape(state):
        del state["sem_seg_head.predictor.class_embed.bias"]
        state["backbone.stem.conv1.weight"] = torch.zeros(3, 3, 3, 3)
        return state

    with pytest.raises(ModelError, match=r"1 missing keys \(sem_seg_head.predictor.class_embed.bias\).*"
                                         r"1 shape mismatches \(backbone.stem.conv1.weight"):
        load_model(_rewrite(tmp_path / "bad", tiny_dir, drop_and_reshape))


def test_unexpected_keys_are_reported_not_fatal(tmp_path, tiny_dir, caplog):
    folder = _rewrite(tmp_path / "extra", tiny_dir, lambda s: {**s, "criterion.empty_weight": torch.ones(3)})
    with caplog.at_level(logging.WARNING):
        load_model(folder)
    assert "1 unexpected keys ignored: criterion.empty_weight" in caplog.text


def test_checkpoint_for_another_config_is_refused(tmp_path, tiny_dir):
    folder = make_random_checkpoint(tmp_path / "other", tiny=True, single_human=True)
    (folder / "configuration.json").write_text((tiny_dir / "configuration.json").read_text())
    with pytest.raises(ModelError, match="does not fit its configuration"):
        load_model(folder)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no-model-key"])
def test_corrupt_weights_are_refused(tmp_path, tiny_dir, damage):
    folder = tmp_path / damage
    folder.mkdir()
    (folder / "configuration.json").write_text((tiny_dir / "configuration.json").read_text())
    weights = (tiny_dir / "pytorch_model.pt").read_bytes()
    target = folder / "pytorch_model.pt"
    if damage == "truncated":
        target.write_bytes(weights[: len(weights) // 2])
    elif damage == "garbage":
        target.write_bytes(b"not a checkpoint" * 100)
    else:
        torch.save({"state_dict": {}}, target)
    with pytest.raises(ModelError, match=str(target)):
        load_model(folder)


def test_a_checkpoint_cut_short_fails_the_api_parser_before_torch_loads_it(tmp_path, tiny_dir):
    """Found before any worker (or the first parse) loads it: the zip archive's index at its end is missing."""
    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "configuration.json").write_text((tiny_dir / "configuration.json").read_text())
    weights = (tiny_dir / "pytorch_model.pt").read_bytes()
    (folder / "pytorch_model.pt").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelError, match="is not a PyTorch checkpoint"):
        vidparse.Parser(model="m2fp", model_dir=folder)


def test_bad_configuration_is_refused(tmp_path):
    (tmp_path / "configuration.json").write_text('{"model": {"type": "m2fp", "backbone": {"depth": 101}}}')
    with pytest.raises(ModelError, match="missing a section"):
        read_config(tmp_path)
    (tmp_path / "configuration.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        read_config(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        read_config(tmp_path / "nowhere")


def test_unknown_top_level_keys_are_ignored_like_modelscope(tmp_path, tiny_dir):
    document = json.loads((tiny_dir / "configuration.json").read_text())
    document["model"]["test_topk_per_image"] = 100
    (tmp_path / "configuration.json").write_text(json.dumps(document))
    assert read_config(tmp_path).num_parsing == 20
    document["model"]["decoder"]["not_a_decoder_key"] = 1
    (tmp_path / "configuration.json").write_text(json.dumps(document))
    with pytest.raises(ModelError, match="not_a_decoder_key"):
        read_config(tmp_path)


def _one_error_line(result) -> str:
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr and "hint: " in result.stderr
    return error


def test_make_random_keeps_a_checkpoint_it_would_overwrite_unless_forced(tmp_path):
    folder = tmp_path / "held"
    folder.mkdir()
    (folder / "pytorch_model.pt").write_bytes(b"weights of my own")
    refused = run_cli("models", "make-random", "m2fp", str(folder), "--tiny")
    assert refused.returncode == 4, refused.stderr
    assert "holds a checkpoint already" in _one_error_line(refused) and "--force" in refused.stderr
    assert (folder / "pytorch_model.pt").read_bytes() == b"weights of my own"
    forced = run_cli("models", "make-random", "m2fp", str(folder), "--tiny", "--force")
    assert forced.returncode == 0, forced.stderr
    assert load_model(folder).config.num_parsing == 20


@pytest.mark.parametrize("target", ["afile", "afile/sub", "/proc/vp_x"])
def test_make_random_into_a_folder_that_cannot_be_made_is_one_line(tmp_path, target):
    (tmp_path / "afile").write_text("x")
    directory = tmp_path / target  # an absolute target stays as it is
    result = run_cli("models", "make-random", "m2fp", str(directory), "--tiny")
    assert result.returncode == 4, result.stderr
    assert str(directory if target.startswith("/") else tmp_path / "afile") in _one_error_line(result)
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("section, key, value, expected", [
    ("decoder", "num_classes", "21", "a whole number of at least 1"),
    ("backbone", "width_per_group", -8, "a whole number of at least 1"),
    (None, "parsing_ins_score_thr", "x", "a number from 0 to 1"),
    ("backbone", "depth", "50", "one of 50, 101, 152"),
    ("encoder", "in_features", ["res9"], 'a list, each one of "res2", "res3", "res4", "res5"'),
    (None, "parsing_on", "yes", "true or false"),
])
def test_a_configuration_value_of_the_wrong_type_is_named_with_what_is_expected(tmp_path, tiny_dir, shared, section,
                                                                                key, value, expected):
    document = json.loads((tiny_dir / "configuration.json").read_text())
    (document["model"][section] if section else document["model"])[key] = value
    result = _run_with_configuration(document, tmp_path, tiny_dir, shared)
    assert result.returncode == 5, result.stderr
    where = f"model.{section}.{key}" if section else f"model.{key}"
    assert _one_error_line(result) == f"error: M2FP configuration: {where} is {json.dumps(value)}; expected {expected}"


def _run_with_configuration(document, tmp_path, tiny_dir, shared):
    """`vidparse run` of a photo with the tiny checkpoint's weights and this configuration.json ``document``."""
    folder = tmp_path / "edited"
    folder.mkdir()
    (folder / "configuration.json").write_text(json.dumps(document))
    (folder / "pytorch_model.pt").symlink_to(tiny_dir / "pytorch_model.pt")
    return run_cli("run", str(shared / "data" / "photos" / "messi5.jpg"), "-o", str(tmp_path / "o.png"),
                   "--model", "m2fp", "--model-dir", str(folder), "--workers", "1")


def _save_plain_pickle(target):
    with target.open("wb") as file:
        pickle.dump({"model": {}}, file, protocol=4)


@pytest.mark.parametrize("weights, error, hint", [
    (lambda target: torch.save({"model": torch.nn.Linear(2, 2)}, target),
     "holds Python objects other than tensors (torch.nn.modules.linear.Linear): refused as unsafe to load",
     "save the weights alone"),
    (lambda target: target.write_bytes(b"not a checkpoint" * 100), "is not a PyTorch checkpoint (corrupt or truncated)",
     "pull the model again"),
    (_save_plain_pickle, "is not a PyTorch checkpoint (corrupt or truncated)", "pull the model again"),
    (lambda target: torch.save({"model": {"weight": 1}}, target), "the 'model' entry is not a state_dict of tensors",
     "torch.save({'model': model.state_dict()}"),
], ids=["unsafe-pickle", "garbage", "plain-pickle", "not-tensors"])
def test_weights_that_cannot_be_loaded_are_one_line_and_a_hint(tmp_path, tiny_dir, shared, weights, error, hint):
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / "configuration.json").write_text((tiny_dir / "configuration.json").read_text())
    weights(folder / "pytorch_model.pt")
    result = run_cli("run", str(shared / "data" / "photos" / "messi5.jpg"), "-o", str(tmp_path / "o.png"),
                     "--model", "m2fp", "--model-dir", str(folder), "--workers", "1")
    assert result.returncode == 5, result.stderr
    line = _one_error_line(result)
    assert line.startswith(f"error: {folder / 'pytorch_model.pt'}") and line.endswith(error), line
    lines = [line for line in result.stderr.splitlines() if line.strip() and "fps" not in line]
    assert len(lines) == 2 and lines[1].startswith("hint: ") and hint in lines[1], result.stderr
    assert "weights_only" not in result.stderr


def test_a_checkpoint_for_another_label_set_says_what_to_use(tmp_path, tiny_dir, shared):
    document = json.loads((tiny_dir / "configuration.json").read_text())
    document["model"]["num_parsing"] = 30
    result = _run_with_configuration(document, tmp_path, tiny_dir, shared)
    assert result.returncode == 5, result.stderr
    assert _one_error_line(result) == "error: M2FP checkpoint parses 30 classes, CIHP has 20"
    assert "hint: use an M2FP model trained on CIHP" in result.stderr
