"""Proof of compatibility: ModelScope's own M2FP and ours, same config, same random state_dict, same outputs."""

from __future__ import annotations

import pytest
import torch
from modelscope_m2fp import build_modelscope_m2fp, modelscope_outputs  # modelscope is a test dependency: no skip

from vidparse.stages.parsers.m2fp.checkpoint import make_random_checkpoint, read_state_dict
from vidparse.stages.parsers.m2fp.config import read_config
from vidparse.stages.parsers.m2fp.model import M2FPNet
from vidparse.stages.parsers.m2fp.postprocess import parsing_inference, semantic_inference, upsample_masks

TOLERANCE = 1e-4


def _both_models(model_dir):
    config = read_config(model_dir)
    state_dict = read_state_dict(model_dir / "pytorch_model.pt")
    ours = M2FPNet(config).eval()
    ours.load_state_dict(state_dict, strict=True)
    theirs = build_modelscope_m2fp(config.to_model_section(), model_dir)
    theirs.load_state_dict(state_dict, strict=True)
    return config, ours, theirs


@pytest.mark.parametrize("single_human", [False, True], ids=["multi-human", "single-human"])
def test_same_outputs_as_modelscope(tmp_path, single_human):
    model_dir = make_random_checkpoint(tmp_path / "m2fp", tiny=True, single_human=single_human, seed=3)
    config, ours, theirs = _both_models(model_dir)
    images = torch.rand(2, 3, 160, 224, generator=torch.Generator().manual_seed(1)) * 255
    their_logits, their_masks = modelscope_outputs(theirs, images)
    with torch.inference_mode():
        our_logits, our_masks = ours(images)
    assert our_logits.shape == their_logits.shape == (2, config.decoder.num_queries, config.decoder.num_classes + 1)
    assert our_masks.shape == their_masks.shape == (2, config.decoder.num_queries, 40, 56)
    assert their_masks.abs().max() > 0.1  # the comparison is not between two near-zero maps
    assert (our_logits - their_logits).abs().max() < TOLERANCE
    assert (our_masks - their_masks).abs().max() < TOLERANCE


def test_postprocessing_matches_modelscope(tmp_path):
    model_dir = make_random_checkpoint(tmp_path / "m2fp", tiny=True, seed=5)
    config, _, theirs = _both_models(model_dir)
    generator = torch.Generator().manual_seed(0)
    queries, classes = config.decoder.num_queries, config.decoder.num_classes
    logits = torch.randn(queries, classes + 1, generator=generator) * 3
    masks = upsample_masks(torch.randn(1, queries, 12, 10, generator=generator) * 4, (48, 40))[0]

    expected_semantic = theirs.semantic_inference(logits, masks)
    assert torch.allclose(semantic_inference(logits, masks), expected_semantic, atol=1e-5)

    theirs.parsing_ins_score_thr = 0.05  # low enough that instances are pasted
    expected = theirs.instance_parsing_inference(logits, masks)
    ours = parsing_inference(logits, masks, config.num_parsing, 0.05)
    assert torch.allclose(ours.semantic, expected["semantic_outputs"], atol=1e-5)
    assert ours.semantic.abs().sum() > 0
    for mine, theirs_list in ((ours.parts, expected["part_outputs"]), (ours.humans, expected["human_outputs"])):
        assert sorted(i.label for i in mine) == sorted(i["category_id"] for i in theirs_list)
        assert sorted(i.score for i in mine) == pytest.approx(sorted(i["score"] for i in theirs_list), abs=1e-6)
