"""The backbone catalogue `gram-tf backbones` prints: registry data only, no model is built.

`measure_sizes` builds one backbone to count what the registry records (parameters and MACs at
the default size with a 2-class head); tests/test_registry.py holds the registry to it, and
tools/backbone_catalogue.py rewrites sizes.py from it.
"""
from __future__ import annotations

from ..errors import GramTFError
from .classifier import build_classifier, count_macs
from .registry import Backbone, list_backbones


def describe_backbones() -> list[dict]:
    """One row per registered backbone, from registry data."""
    rows = []
    for bb in list_backbones():
        rows.append({
            "name": bb.name, "family": bb.family, "default_size": bb.default_size,
            "min_size": bb.min_size, "source": bb.source,
            "weights": "imagenet,none,file" if bb.imagenet_files else "none,file",
            "imagenet_file": bb.imagenet_files[0] if bb.imagenet_files else "",
            "params": bb.params, "macs": bb.macs, "notes": bb.notes,
        })
    return rows


def measure_sizes(bb: Backbone, model=None) -> dict:
    """Parameters and MACs of `bb` built at its default size with a 2-class head (random weights)."""
    if model is None:
        try:
            model, _ = build_classifier(bb.name, 2, weights="none")
        except GramTFError as exc:
            return {"params": None, "macs": None, "error": str(exc)}
    return {"params": int(model.count_params()), "macs": count_macs(model)}
