"""Which layers of each backbone TF-MOT can prune and quantize-aware-train: a per-backbone catalogue.

`SUPPORT` is data (written by tools/backbone_catalogue.py, checked against a build by
tests/test_registry.py), so `gram-tf backbones` shows it without building a model.
"""
from __future__ import annotations

from .prune import prunable_layer_report
from .qat import qat_layer_report
from .support_data import SUPPORT


def support_summary(model) -> dict:
    """How many weighted layers TF-MOT can prune and quantize (QAT), checked against its registries."""
    pr = prunable_layer_report(model)
    qr = qat_layer_report(model)
    return {
        "prunable": f"{pr['n_prunable']}/{pr['n_weighted']}",
        "qat": f"{qr['n_quantizable']}/{qr['n_layers']}",
    }


def backbone_support(name: str) -> dict:
    """The recorded support of a registered backbone ({'prunable': 'a/b', 'qat': 'c/d'}), or n/a."""
    return SUPPORT.get(name, {"prunable": "n/a", "qat": "n/a"})
