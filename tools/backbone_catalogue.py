"""Rewrite the registry's recorded data by building every backbone once (random weights, default
size, 2-class head): parameters and MACs (gram_tf/models/sizes.py) and TF-MOT support
(gram_tf/optimize/support_data.py). tests/test_registry.py checks both against a build.

    python tools/backbone_catalogue.py          # about 2 minutes on 2 cores
"""
from __future__ import annotations

import pprint
import sys
from pathlib import Path

import gram_tf  # noqa: F401  (legacy Keras switch)

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    import tf_keras
    from tqdm import tqdm

    from gram_tf.io_utils import atomic_write_text
    from gram_tf.models import build_classifier, list_backbones, measure_sizes
    from gram_tf.optimize import support_summary

    sizes, support = {}, {}
    for bb in tqdm(list_backbones(), desc="building backbones"):
        model, _ = build_classifier(bb.name, 2, weights="none")
        sizes[bb.name] = measure_sizes(bb, model)
        support[bb.name] = support_summary(model)
        tf_keras.backend.clear_session()
    header = '"""{}\n\nWritten by tools/backbone_catalogue.py; checked by tests/test_registry.py."""\n'
    atomic_write_text(ROOT / "gram_tf/models/sizes.py", header.format(
        "Parameters and MACs per registered backbone at its default size with a 2-class head (data).")
        + "SIZES: dict = " + pprint.pformat(sizes, width=110, sort_dicts=False) + "\n")
    atomic_write_text(ROOT / "gram_tf/optimize/support_data.py", header.format(
        "TF-MOT support per registered backbone: prunable and QAT-annotatable layers of all weighted ones (data).")
        + "SUPPORT: dict = " + pprint.pformat(support, width=110, sort_dicts=False) + "\n")
    print(f"{len(sizes)} backbones written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
