"""Test helper: import ModelScope's own M2FP class on a CPU-only machine, to check our network against it.

ModelScope's M2FP module imports mmcv.ops, timm and torchvision (and addict, through its config utilities, and
cryptography, through modelscope_hub's login code) at import time. Its CPU forward never uses them except mmcv's
pure-PyTorch deformable-attention fallback, which is written out below from mmcv's published math (grid_sample
per level, weighted sum), independently of vidparse's own sampler. Stand-ins are visible only while ModelScope's modules are imported.
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# mmcv always (its compiled ops are CUDA builds); the others only where they are not installed, since a stand-in
# shadowing a real package breaks the real packages that import it (transformers imports torchvision).
OPTIONAL_STAND_INS = ("timm", "torchvision", "addict", "cryptography")


def multi_scale_deformable_attn_pytorch(value, value_spatial_shapes, sampling_locations, attention_weights):
    """mmcv's reference: value (N, S, heads, d); locations (N, Lq, heads, levels, points, 2) in [0, 1]."""
    batch, _, heads, dim = value.shape
    _, queries, heads, levels, points, _ = sampling_locations.shape
    per_level = value.split([int(h) * int(w) for h, w in value_spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(value_spatial_shapes):
        v = per_level[level].flatten(2).transpose(1, 2).reshape(batch * heads, dim, int(h), int(w))
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(batch, heads * dim, queries)
    return out.transpose(1, 2).contiguous()


class _CompiledOpUnavailable:
    @staticmethod
    def apply(*args: Any) -> Any:
        raise NotImplementedError("compiled mmcv op (CUDA only)")


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Placeholder packages whose attributes are empty classes (enough for imports and base classes)."""

    def __init__(self) -> None:
        self.roots = {"mmcv"} | {root for root in OPTIONAL_STAND_INS if importlib.util.find_spec(root) is None}

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def placeholder(attr: str) -> type:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (), {})

        module.__getattr__ = placeholder
        if spec.name == "mmcv.ops.multi_scale_deform_attn":
            module.MultiScaleDeformableAttnFunction = _CompiledOpUnavailable
            module.multi_scale_deformable_attn_pytorch = multi_scale_deformable_attn_pytorch
        return module

    def exec_module(self, module):
        pass


def import_modelscope_m2fp() -> type:
    if "modelscope.models.cv.image_human_parsing.m2fp_net" in sys.modules:
        return sys.modules["modelscope.models.cv.image_human_parsing.m2fp_net"].M2FP
    finder = _StandInFinder()
    sys.meta_path.insert(0, finder)
    import modelscope.utils.import_utils as import_utils

    # ModelScope checks timm's install metadata before its lazy imports; some versions (where this module is
    # transformers' own) have no such flag and need no help.
    has_timm_flag = hasattr(import_utils, "_timm_available")
    if has_timm_flag:
        timm_flag = import_utils._timm_available
        import_utils._timm_available = True
    try:
        from modelscope.models.cv.image_human_parsing.m2fp_net import M2FP
    finally:
        sys.meta_path.remove(finder)
        if has_timm_flag:
            import_utils._timm_available = timm_flag
        for name in [n for n in sys.modules if n.split(".")[0] in finder.roots]:
            del sys.modules[name]
    return M2FP


def build_modelscope_m2fp(model_section: dict[str, Any], model_dir: Path) -> torch.nn.Module:
    """ModelScope's M2FP from a configuration's ``model`` section, without loading weights."""
    M2FP = import_modelscope_m2fp()
    kwargs = {k: v for k, v in copy.deepcopy(model_section).items() if k != "type"}
    kwargs["pretrained"] = False
    model = M2FP(str(model_dir), device="cpu", **kwargs)
    return model.eval()


def modelscope_outputs(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ModelScope's raw forward on RGB 0..255 images (B, 3, H, W): class logits and mask logits."""
    with torch.no_grad():
        result = model.forward({"batched_inputs": [{"image": image} for image in images]})
    return result["outputs"]["pred_logits"], result["outputs"]["pred_masks"]
