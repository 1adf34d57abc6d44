"""From class and mask logits to per-class probability maps: the semantic and the instance-parsing inference."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TOPK_PER_IMAGE = 100
INSTANCE_SCORE_FLOOR = 0.1  # parts and humans reported only above this score


@dataclass
class Instance:
    label: int
    score: float
    mask_logits: torch.Tensor  # H x W


@dataclass
class ParsingOutput:
    semantic: torch.Tensor  # num_parsing x H x W, instance probabilities pasted per class
    parts: list[Instance]
    humans: list[Instance]


def upsample_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, Q, h, w) mask logits resized to the padded input size (bilinear)."""
    return F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Sum over queries of class probability (no-object class dropped) times mask probability: C x H x W."""
    class_probs = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", class_probs, mask_logits.sigmoid())


def parsing_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor, num_parsing: int,
                      score_threshold: float) -> ParsingOutput:
    """Top (query, class) pairs as instances scored by class probability times mean mask probability inside the
    mask; part instances at or above ``score_threshold`` are pasted into per-class maps (mean of the
    probabilities of the instances covering a pixel), label ``num_parsing`` is the human class."""
    num_classes = class_logits.shape[1] - 1
    scores = class_logits.softmax(-1)[:, :-1].flatten()
    top_scores, top = scores.topk(min(TOPK_PER_IMAGE, scores.numel()))
    labels = top % num_classes
    masks = mask_logits[torch.div(top, num_classes, rounding_mode="floor")]
    probs = masks.sigmoid()
    inside = (masks > 0).to(probs.dtype)
    mask_scores = (probs * inside).flatten(1).sum(1) / (inside.flatten(1).sum(1) + 1e-6)
    scores = top_scores * mask_scores

    is_part = labels != num_parsing
    part_labels, part_scores, part_probs = labels[is_part], scores[is_part], probs[is_part]
    weighted = part_probs * part_scores[:, None, None]
    covering = ((weighted > 0.5) & (part_scores >= score_threshold)[:, None, None]).to(weighted.dtype)
    height, width = mask_logits.shape[-2:]
    sums = weighted.new_zeros(num_parsing, height, width).index_add_(0, part_labels, weighted * covering)
    counts = weighted.new_zeros(num_parsing, height, width).index_add_(0, part_labels, covering)
    semantic = sums / counts.clamp(min=1)

    def instances(select: torch.Tensor) -> list[Instance]:
        return [Instance(int(labels[i]), float(scores[i]), masks[i]) for i in torch.nonzero(select).flatten()]

    # ModelScope keeps parts scoring at least the floor and humans scoring above it.
    floor = INSTANCE_SCORE_FLOOR
    return ParsingOutput(semantic=semantic, parts=instances(is_part & (labels != 0) & (scores >= floor)),
                         humans=instances(~is_part & (scores > floor)))


def class_probabilities(class_logits: torch.Tensor, mask_logits: torch.Tensor, num_parsing: int,
                        parsing: bool, score_threshold: float) -> torch.Tensor:
    """num_parsing x H x W scores whose argmax is the label map (extra classes such as Human dropped)."""
    if parsing:
        return parsing_inference(class_logits, mask_logits, num_parsing, score_threshold).semantic
    return semantic_inference(class_logits, mask_logits)[:num_parsing]
