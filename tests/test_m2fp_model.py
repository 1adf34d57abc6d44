"""Network pieces: the two deformable samplers agree, BatchNorm folding, ONNX export with dynamic shapes."""

from __future__ import annotations

import pytest
import torch

from vidparse.stages.parsers.m2fp.checkpoint import load_model, make_random_checkpoint
from vidparse.stages.parsers.m2fp.deform_attn import MSDeformAttn, use_sampler
from vidparse.stages.parsers.m2fp.pixel_decoder import reference_points


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return load_model(make_random_checkpoint(tmp_path_factory.mktemp("m2fp") / "tiny", tiny=True))


def test_samplers_agree_including_points_outside_the_map():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=4).eval()
    with torch.no_grad():
        attn.sampling_offsets.weight.mul_(40)  # offsets of many pixels: some points fall outside
    shapes = [(3, 4), (6, 8), (12, 16)]
    length = sum(h * w for h, w in shapes)
    query, value = torch.randn(2, length, 32), torch.randn(2, length, 32)
    ref = torch.cat([reference_points(torch.zeros(1, 1, h, w)) for h, w in shapes])[None]
    with torch.inference_mode():
        attn.sampler = "grid_sample"
        expected = attn(query, ref, value, shapes)
        attn.sampler = "embedding_bag"
        actual = attn(query, ref, value, shapes)
    assert (actual - expected).abs().max() < 1e-5


def test_model_output_does_not_depend_on_sampler(tiny_model):
    images = torch.rand(1, 3, 96, 128) * 255
    with torch.inference_mode():
        use_sampler(tiny_model, "grid_sample")
        expected = tiny_model(images)
        use_sampler(tiny_model, "embedding_bag")
        actual = tiny_model(images)
    assert all((a - e).abs().max() < 1e-4 for a, e in zip(actual, expected))


def test_fused_batchnorm_gives_same_outputs(tmp_path):
    folder = make_random_checkpoint(tmp_path / "tiny", tiny=True)
    model, fused = load_model(folder), load_model(folder)
    fused.fuse_batchnorm()
    images = torch.rand(1, 3, 64, 96) * 255
    with torch.inference_mode():
        assert all((a - b).abs().max() < 1e-4 for a, b in zip(model(images), fused(images)))


def test_onnx_export_keeps_height_and_width_dynamic(tiny_model, tmp_path):
    from vidparse.stages.parsers.m2fp.onnx_backend import OnnxRunner, export_onnx

    runner = OnnxRunner(export_onnx(tiny_model, tmp_path / "tiny.onnx"), threads=1)
    for shape in [(1, 3, 256, 192), (2, 3, 160, 224), (1, 3, 320, 96)]:
        images = torch.rand(*shape) * 255
        with torch.inference_mode():
            expected = tiny_model(images)
        actual = runner(images)
        assert actual[1].shape == expected[1].shape
        assert all((a - e).abs().max() < 1e-3 for a, e in zip(actual, expected))
