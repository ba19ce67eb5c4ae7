"""Swin's shifted-window mask in full int8: does timm's -100 widen the calibrated attention-logit
range enough to cost accuracy, and does a smaller mask value (the same softmax in float) help?

Swin-tiny at 224 px from a random timm-named checkpoint (`--checkpoint FILE` for real weights),
synthetic micrographs: per mask value, the float features' change against -100 (float), and the
full-int8 features against the float model's (cosine similarity, relative L2), plus the widest
calibrated range among the masked blocks' logit tensors.

    python benchmarks/swin_mask_int8.py [--masks -100,-30,-10] [--images 16] [--checkpoint FILE]
Writes benchmarks/results/swin_mask_int8.{csv,json}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

import gram_tf  # noqa: E402,F401  (Keras 2 mode before TensorFlow loads)


def random_checkpoint(path: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    from gram_tf.models import get_backbone
    from gram_tf.models.swin import expected_tensors

    rng = np.random.default_rng(0)
    tensors = {}
    for key, shape in expected_tensors(get_backbone("swin_tiny").app_kwargs).items():
        if "norm" in key and key.endswith("weight"):
            tensors[key] = np.ones(shape, np.float32)
        elif "relative_position_bias_table" in key:
            tensors[key] = rng.normal(0, 1.0, shape).astype(np.float32)  # trained tables span a few units
        elif len(shape) > 1:
            tensors[key] = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        else:
            tensors[key] = np.zeros(shape, np.float32)
    save_file(tensors, str(path))
    return path


def main() -> None:
    import tempfile

    import numpy as np
    import tensorflow as tf

    from gram_tf.data import render_micrograph
    from gram_tf.models import build_classifier, feature_extractor
    from gram_tf.models import swin_layers

    ap = argparse.ArgumentParser()
    ap.add_argument("--masks", default="-100,-30,-10")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--checkpoint", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = np.stack([np.asarray(render_micrograph(rng, "positive" if i % 2 else "negative", 224))
                       for i in range(2 * args.images)]).astype(np.float32)
    calib, test = images[: args.images], images[args.images:]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or random_checkpoint(Path(tmp) / "swin.safetensors")
        rows, reference = [], None
        for mask in (float(m) for m in args.masks.split(",")):
            swin_layers.MASK_VALUE = mask
            model, info = build_classifier("swin_tiny", 2, 224, weights=str(ckpt))
            pre = info["preprocessing"]
            norm = lambda x: (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)  # noqa: E731
            feats = feature_extractor(model)
            fn = tf.function(lambda x: feats(x, training=False))
            concrete = fn.get_concrete_function(tf.TensorSpec([1, 224, 224, 3], tf.float32))
            conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], feats)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([norm(x)[None]] for x in calib)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            blob = conv.convert()
            from ai_edge_litert.interpreter import Interpreter

            it = Interpreter(model_content=blob)
            it.allocate_tensors()
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
            # calibrated range of every softmax input (attention logits + bias + mask), widest first
            details = {t["index"]: t for t in it.get_tensor_details()}
            ranges = sorted((float(details[op["inputs"][0]]["quantization_parameters"]["scales"][0]) * 255
                             for op in it._get_ops_details() if op["op_name"] == "SOFTMAX"), reverse=True)
            f_float = np.stack([feats(norm(x)[None], training=False).numpy()[0] for x in test])
            f_int8 = []
            for x in test:
                it.set_tensor(inp["index"], norm(x)[None].astype(np.float32))
                it.invoke()
                f_int8.append(it.get_tensor(out["index"])[0])
            f_int8 = np.stack(f_int8)
            if reference is None:
                reference = f_float
            cos = float(np.mean(np.sum(f_float * f_int8, 1) / (np.linalg.norm(f_float, axis=1) * np.linalg.norm(f_int8, axis=1))))
            rows.append({
                "mask": mask,
                "float_max_abs_change_vs_first": float(np.max(np.abs(f_float - reference))),
                "int8_cosine": round(cos, 5),
                "int8_rel_l2": round(float(np.linalg.norm(f_int8 - f_float) / np.linalg.norm(f_float)), 5),
                "widest_logit_range": round(ranges[0], 2),
                "median_logit_range": round(float(np.median(ranges)), 2),
            })
            print(rows[-1], flush=True)
    write_results("swin_mask_int8", rows)


if __name__ == "__main__":
    main()
