"""Label sets (class names, palette colors, evaluation classes per scheme) loaded from ``configs/labels/*.yaml``."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import yaml

from vidparse.errors import ConfigError
from vidparse.stages.types import LabelSet

COARSE_CLASSES = ("background", "head", "hair", "torso", "arms", "hands", "legs", "feet")
# What people wear: upper = garments over the torso and arms, one-piece garments (dress, romper, suit) included;
# lower = garments over the legs (trousers, skirts, shorts, tights); skin = face, neck, arms, hands, legs.
GARMENT_CLASSES = ("background", "skin", "hair", "upper", "lower", "footwear")
# Garment types: coat = blazer, jacket, cardigan, cape, suit; dress = dress, romper; pants = trousers, jeans, shorts,
# leggings, tights; shoes = any footwear; skin = face, neck, arms, hands, legs. Accessories are left out.
FINE_CLASSES = ("background", "hat", "hair", "sunglasses", "upper", "coat", "dress", "skirt", "pants", "socks", "shoes",
                "scarf", "gloves", "skin")
# Scoring schemes: the classes of each; every label-set class names its class in each scheme (a YAML key per scheme).
SCHEMES: dict[str, tuple[str, ...]] = {"coarse": COARSE_CLASSES, "garments": GARMENT_CLASSES, "fine": FINE_CLASSES}
# A class that fits no single coarse class (CCP's "skin" covers face, arms, hands and legs): left out of evaluation.
IGNORE = "ignore"


def available_label_sets() -> list[str]:
    folder = resources.files("vidparse.configs") / "labels"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


@lru_cache(maxsize=None)
def load_label_set(name: str) -> LabelSet:
    path = resources.files("vidparse.configs") / "labels" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown label set '{name}'", hint=f"choose one of: {', '.join(available_label_sets())}")
    spec = yaml.safe_load(path.read_text())
    classes = spec["classes"]
    for scheme, allowed in SCHEMES.items():
        unknown = sorted({c.get(scheme) for c in classes} - {*allowed, IGNORE}, key=str)
        if unknown:
            raise ConfigError(f"label set '{name}' uses unknown {scheme} class '{unknown[0]}'",
                              hint=f"{scheme} classes: {', '.join(allowed)}, {IGNORE}")
    rgb = np.array([c["color"] for c in classes], dtype=np.uint8)
    return LabelSet(
        name=spec["name"],
        names=tuple(c["name"] for c in classes),
        colors=rgb[:, ::-1].copy(),
        groups={scheme: {c["name"]: c[scheme] for c in classes} for scheme in SCHEMES},
    )
