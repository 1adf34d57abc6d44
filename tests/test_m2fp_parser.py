"""The M2FP Parser adapter on tiny random checkpoints: label maps of the right size and label set, backends
agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidparse.errors import ModelError
from vidparse.stages.parsers import create_parser
from vidparse.stages.parsers.m2fp import Options, make_random_checkpoint
from vidparse.stages.parsers.m2fp.checkpoint import load_model


@pytest.fixture(scope="module")
def multi_dir(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("m2fp") / "multi", tiny=True)


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("m2fp") / "single", tiny=True, single_human=True)


def _crops(count=3, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(120, 50), (90, 41), (150, 77), (60, 30)][:count]
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def _parse(name, options, folder, images):
    return _parse_recorded(name, options, folder, images)[0]


def _parse_recorded(name, options, folder, images):
    """Labels, plus each network call: (input shape, class logits, mask logits)."""
    parser = create_parser(name, options, folder)
    parser.open()
    runner, calls = parser.runner, []

    def recording(batch):
        class_logits, mask_logits = runner(batch)
        calls.append((tuple(batch.shape), class_logits.float().clone(), mask_logits.float().clone()))
        return class_logits, mask_logits

    parser.runner = recording
    try:
        return parser.parse(images), calls
    finally:
        parser.close()


@pytest.mark.parametrize("postprocess", ["semantic", "parsing"])
def test_multi_human_packs_crops(multi_dir, postprocess):
    crops = _crops()
    labels, calls = _parse_recorded("m2fp", Options(person_height=96, postprocess=postprocess), multi_dir, crops)
    # Heights 96, widths 40, 44, 49: two shelves (96 + 16 + 96) of at most 100 px, padded to multiples of 32.
    assert [shape for shape, *_ in calls] == [(1, 3, 224, 128)], "one forward pass on one packed canvas"
    assert [lab.shape for lab in labels] == [c.shape[:2] for c in crops]
    assert all(lab.dtype == np.uint8 and lab.max() < 20 for lab in labels)


def test_whole_frame_mode_scales_to_short_side(multi_dir):
    frame = _crops(1)[0]  # 120 x 50: short side 50 -> 64, so 154 x 64, padded to 160 x 64
    labels, calls = _parse_recorded("m2fp", Options(person_height=0, input_short_side=64), multi_dir, [frame])
    assert [shape for shape, *_ in calls] == [(1, 3, 160, 64)]
    assert labels[0].shape == frame.shape[:2]


def test_single_human_batches_crops(single_dir):
    crops = _crops(4)
    labels, calls = _parse_recorded("m2fp-single", Options(batch_size=3), single_dir, crops)
    width, height = load_model(single_dir).config.single_human_size
    padded = (-(-height // 32) * 32, -(-width // 32) * 32)
    assert [shape for shape, *_ in calls] == [(3, 3, *padded), (1, 3, *padded)], "batches of 3, then the rest"
    assert [lab.shape for lab in labels] == [c.shape[:2] for c in crops]
    assert all(lab.dtype == np.uint8 and lab.max() < 20 for lab in labels)


def test_single_human_batch_equals_one_by_one(single_dir):
    crops = _crops(3)
    together, batch_calls = _parse_recorded("m2fp-single", Options(batch_size=8), single_dir, crops)
    (_, batch_classes, batch_masks), = batch_calls
    for i, crop in enumerate(crops):
        alone, ((_, classes, masks),) = _parse_recorded("m2fp-single", Options(), single_dir, [crop])
        assert torch.allclose(batch_classes[i], classes[0], atol=1e-4)
        assert torch.allclose(batch_masks[i], masks[0], atol=1e-4)
        assert masks[0].std() > 0.1, "the masks are not constant"
        assert np.array_equal(together[i], alone[0])


def test_variant_must_fit_checkpoint(multi_dir):
    parser = create_parser("m2fp-single", Options(), multi_dir)
    with pytest.raises(ModelError, match="multi-human"):
        parser.open()


def _relative_drift(ours, reference):
    return float((ours - reference).abs().mean() / reference.abs().mean())


def test_onnx_backend_matches_eager(multi_dir, tmp_path):
    crops = _crops()
    eager, ((shape, classes, masks),) = _parse_recorded("m2fp", Options(person_height=96), multi_dir, crops)
    onnx, ((onnx_shape, onnx_classes, onnx_masks),) = _parse_recorded(
        "m2fp", Options(person_height=96, backend="onnx", onnx_cache=str(tmp_path)), multi_dir, crops)
    assert onnx_shape == shape
    assert masks.std() > 0.1 and classes.std() > 1, "logits that vary"
    assert (onnx_classes - classes).abs().max() < 1e-3 and (onnx_masks - masks).abs().max() < 1e-3
    assert all(np.array_equal(a, b) for a, b in zip(eager, onnx))
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    int8, ((_, int8_classes, int8_masks),) = _parse_recorded(
        "m2fp", Options(person_height=96, backend="onnx", int8=True, onnx_cache=str(tmp_path)), multi_dir, crops)
    assert [lab.shape for lab in int8] == [c.shape[:2] for c in crops]
    assert len(list(tmp_path.glob("*-int8.onnx"))) == 1
    # Quantized (the logits move), but close. Tiny random weights exaggerate drift, as in test_int8_drift_is_small.
    assert 1e-4 < _relative_drift(int8_masks, masks) < 0.15
    assert 1e-4 < _relative_drift(int8_classes, classes) < 0.15


def test_int8_drift_is_small(multi_dir):
    from vidparse.stages.parsers.m2fp.checkpoint import load_model
    from vidparse.stages.parsers.m2fp.parser import quantize_linear

    model = load_model(multi_dir)
    images = torch.rand(1, 3, 128, 96, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        logits, masks = model(images)
    quantized = quantize_linear(model)
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
    with torch.inference_mode():
        q_logits, q_masks = quantized(images)
    # Tiny random weights exaggerate drift; the benchmark measures it on the ResNet-101 layout.
    assert (q_masks - masks).abs().mean() / masks.abs().mean() < 0.15
    assert (q_logits - logits).abs().mean() / logits.abs().mean() < 0.15


def test_parse_before_open_fails(multi_dir):
    with pytest.raises(RuntimeError):
        create_parser("m2fp", Options(), multi_dir).parse(_crops(1))


def test_fast_postprocess_close_to_exact(multi_dir):
    """Scores at 1/4 resolution then resized (fast) against masks resized first (exact, ModelScope's way), on
    smooth mask logits with confident classes, as a trained network gives: several classes, same labels almost
    everywhere. (A random network's masks are noise at 1/4 resolution, where no resize order agrees.)"""
    generator = torch.Generator().manual_seed(0)
    queries, classes = 12, 20
    class_logits = torch.full((1, queries, classes + 1), -4.0)
    class_logits[0, torch.arange(queries), torch.arange(queries) % 10 + 1] = 6.0  # query q: class q % 10 + 1
    coarse = torch.randn(1, queries, 4, 3, generator=generator) * 6
    mask_logits = torch.nn.functional.interpolate(coarse, size=(56, 32), mode="bilinear", align_corners=False)
    labels = {}
    for exact in (False, True):
        parser = create_parser("m2fp", Options(postprocess="semantic", exact_postprocess=exact), multi_dir)
        parser.open()
        parser.runner = lambda batch: (class_logits, mask_logits)
        labels[exact] = parser.parse([np.zeros((224, 128, 3), np.uint8)])[0]
        parser.close()
    fast, exact = labels[False], labels[True]
    assert len(np.unique(exact)) >= 5 and len(np.unique(fast)) >= 5, "several classes in both maps"
    assert (fast == exact).mean() > 0.99  # measured 0.996; resizing the scores nearest-neighbour gives 0.977


def test_bad_choice_is_a_config_error(multi_dir):
    from vidparse.errors import ConfigError

    with pytest.raises(ConfigError, match="backend must be one of eager, onnx"):
        create_parser("m2fp", Options(backend="tensorrt"), multi_dir)


def test_bf16_autocasts_and_stays_close_to_fp32(multi_dir):
    """precision: bf16 autocasts the network (its logits come out bf16) while the pixel decoder's deformable
    attention stays fp32, as in ModelScope; logits and labels stay near fp32's. Runs on the CPU; --device cuda
    takes the same autocast path (benchmarks/device_check.py times it on a GPU)."""
    from vidparse.errors import ConfigError

    crops = _crops()
    fp32, ((shape, classes, masks),) = _parse_recorded("m2fp", Options(person_height=96), multi_dir, crops)
    options = Options(person_height=96, precision="bf16")
    bf16, ((bf_shape, bf_classes, bf_masks),) = _parse_recorded("m2fp", options, multi_dir, crops)
    assert bf_shape == shape
    assert 1e-4 < _relative_drift(bf_masks, masks) < 0.05
    assert 1e-4 < _relative_drift(bf_classes, classes) < 0.05
    assert np.mean([(a == b).mean() for a, b in zip(bf16, fp32)]) > 0.9
    parser = create_parser("m2fp", options, multi_dir)
    parser.open()
    assert all(out.dtype == torch.bfloat16 for out in parser.runner(torch.rand(1, 3, 64, 64) * 255))
    with pytest.raises(ConfigError, match="onnx backend runs in fp32"):
        create_parser("m2fp", Options(backend="onnx", precision="bf16"), multi_dir)
