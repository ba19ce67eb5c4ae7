"""Registry-wide tests, parametrised over every registered backbone (as timm does): the cheap
metadata checks, and the recorded params/MACs/TF-MOT support against a real build."""
from __future__ import annotations

import pytest

from gram_tf.deploy import validate_preprocessing
from gram_tf.models import build_classifier, list_backbones, measure_sizes
from gram_tf.optimize import backbone_support, support_summary

BACKBONES = list_backbones()
NAMES = [bb.name for bb in BACKBONES]


@pytest.mark.parametrize("bb", BACKBONES, ids=NAMES)
def test_metadata(bb):
    assert bb.min_size <= bb.default_size
    if bb.patch_size:
        assert bb.default_size % bb.patch_size == 0
    pre = validate_preprocessing({"resize": "squash", **bb.preprocessing}, bb.name)
    assert all(s > 0 for s in pre["std"])
    assert bb.params and bb.macs, f"{bb.name}: no recorded params/MACs; run tools/backbone_catalogue.py"
    assert backbone_support(bb.name)["prunable"] != "n/a", f"{bb.name}: no recorded TF-MOT support"
    for f in bb.imagenet_files:
        assert f.endswith(".h5")


def test_names_are_unique_and_sorted_by_family():
    assert len(set(NAMES)) == len(NAMES)
    families = [bb.family for bb in BACKBONES]
    # one contiguous block per family: the catalogue lists families together
    assert len({f for f in families}) == sum(1 for i, f in enumerate(families) if i == 0 or families[i - 1] != f)


@pytest.mark.parametrize("bb", BACKBONES, ids=NAMES)
def test_recorded_sizes_and_support_match_a_build(bb):
    import tf_keras

    model, _ = build_classifier(bb.name, 2, weights="none")
    try:
        assert measure_sizes(bb, model) == {"params": bb.params, "macs": bb.macs}, \
            "recorded sizes are stale: run tools/backbone_catalogue.py"
        assert support_summary(model) == backbone_support(bb.name)
        # the safe loader's allowlist accepts every class the registry's models are saved with
        from gram_tf.models.safe_config import check_config

        check_config(tf_keras.saving.serialize_keras_object(model), bb.name)
    finally:
        tf_keras.backend.clear_session()
