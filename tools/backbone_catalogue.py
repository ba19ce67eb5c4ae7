"""Rewrite the registry's recorded data by building every backbone once (random weights, default
size, 2-class head): parameters and MACs (gram_tf/models/sizes.py) and TF-MOT support
(gram_tf/optimize/support_data.py). tests/test_registry.py checks both against a build.

    python tools/backbone_catalogue.py          # about 2 minutes on 2 cores
    python tools/backbone_catalogue.py --backbones mobilenet_v1_025 --out /tmp/cat   # a few, elsewhere
"""
from __future__ import annotations

import argparse
import pprint
import sys
from pathlib import Path

import gram_tf  # noqa: F401  (legacy Keras switch)

ROOT = Path(__file__).resolve().parents[1]
# where each table lives in the package, relative to --out
FILES = {"sizes": "gram_tf/models/sizes.py", "support": "gram_tf/optimize/support_data.py"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="", help="comma list (default: every registered backbone)")
    ap.add_argument("--out", default=None,
                    help="write FILES under this folder instead of the package (needed with --backbones)")
    args = ap.parse_args(argv)
    names = [n for n in args.backbones.split(",") if n.strip()]
    if names and args.out is None:
        # the package's tables must hold every backbone: a subset written there would drop the rest
        raise SystemExit("error: --backbones writes a partial table; pass --out DIR to write it elsewhere")

    import tf_keras
    from tqdm import tqdm

    from gram_tf.io_utils import atomic_write_text
    from gram_tf.models import build_classifier, get_backbone, list_backbones, measure_sizes
    from gram_tf.optimize import support_summary

    out = Path(args.out) if args.out else ROOT
    backbones = [get_backbone(n) for n in names] if names else list_backbones()
    sizes, support = {}, {}
    for bb in tqdm(backbones, desc="building backbones"):
        model, _ = build_classifier(bb.name, 2, weights="none")
        sizes[bb.name] = measure_sizes(bb, model)
        support[bb.name] = support_summary(model)
        tf_keras.backend.clear_session()
    header = '"""{}\n\nWritten by tools/backbone_catalogue.py; checked by tests/test_registry.py."""\n'
    for key, doc, name, table in [
            ("sizes", "Parameters and MACs per registered backbone at its default size with a 2-class head (data).",
             "SIZES", sizes),
            ("support", "TF-MOT support per registered backbone: prunable and QAT-annotatable layers of all "
             "weighted ones (data).", "SUPPORT", support)]:
        path = out / FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, header.format(doc) + f"{name}: dict = "
                          + pprint.pformat(table, width=110, sort_dicts=False) + "\n")
    print(f"{len(sizes)} backbones written under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
