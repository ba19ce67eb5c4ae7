"""The quickstart-size path for each architecture ported from timm (issue 15): `gram-tf train
--backbone NAME --weights FILE.safetensors` with a timm-named file, `gram-tf convert` to fp32 and
int8, `gram-tf predict` with LiteRT, `gram-tf profile`. Smallest variant of each, tiny inputs, one
epoch."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from gram_tf.cli import main
from gram_tf.models import build_classifier


def _timm_file(name: str, size: int, path):
    """A random checkpoint with exactly timm's tensor names and shapes (plus its ImageNet head)."""
    from safetensors.numpy import save_file

    from gram_tf.models import get_backbone

    bb = get_backbone(name)
    if bb.family == "PoolFormer":
        from gram_tf.models.poolformer import expected_shapes
        shapes = expected_shapes(bb.app_kwargs["depths"])
    elif bb.family == "MobileViT":
        from gram_tf.models.mobilevit import SPECS, expected_shapes
        shapes = expected_shapes(SPECS[name])
    elif bb.family == "Swin":
        from gram_tf.models.swin import expected_tensors
        shapes = expected_tensors(bb.app_kwargs)
    elif bb.family == "BEiT":
        from gram_tf.models.beit import expected_shapes
        shapes = expected_shapes(bb.app_kwargs)  # a 224 px checkpoint: its bias tables are resized
    else:
        raise AssertionError(f"no checkpoint recipe for {name}")
    rng = np.random.default_rng(0)
    tensors = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            tensors[key] = np.array(1, np.int64)
        elif key.endswith(("running_var", "norm1.weight", "norm2.weight", "norm.weight", "bn.weight", "gamma_1",
                           "gamma_2")):
            tensors[key] = np.ones(shape, np.float32)
        elif len(shape) > 1:
            tensors[key] = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
        else:
            tensors[key] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def few_images(tmp_path_factory):
    """Eight images a class: one epoch of Swin-tiny at 224 px on the session's 96 took a minute."""
    from gram_tf.data.synth import synthesize_dataset

    out = tmp_path_factory.mktemp("few")
    synthesize_dataset(out, per_class=8, size=32, seed=0, fields_per_specimen=1, progress=False)
    return out


# the smallest of each family at its smallest input (Swin's window 7 needs 224 px)
@pytest.mark.parametrize("name,size", [("poolformer_s12", 32), ("mobilevit_xxs", 64), ("swin_tiny", 224),
                                       ("beit_base", 32)])
def test_train_convert_predict(name, size, few_images, tmp_path):
    runner = CliRunner()
    ckpt = _timm_file(name, size, tmp_path / f"{name}.safetensors")
    run = tmp_path / "run"
    r = runner.invoke(main, ["train", "--data", str(few_images), "--backbone", name, "--weights", str(ckpt),
                             "--input-size", str(size), "--epochs", "1", "--out", str(run)])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "run.json").read_text())["weights"] == str(ckpt)
    tfl = tmp_path / "tfl"
    # Swin-tiny and BEiT-base: int8 only here (their fp32 conversion is tested in test_swin / test_beit,
    # and a 110-344 MB fp32 export costs the suite a minute each)
    variants = ("int8",) if name in ("swin_tiny", "beit_base") else ("fp32", "int8")
    r = runner.invoke(main, ["convert", str(run), "--variants", ",".join(variants), "--representative-samples", "4",
                             "--out", str(tfl)])
    assert r.exit_code == 0, r.output
    images = sorted(p for p in few_images.rglob("*.png"))[:3]
    for variant in variants:
        model = next(tfl.glob(f"*__{variant}.tflite"))
        r = runner.invoke(main, ["predict", str(model), *map(str, images), "--json"])
        assert r.exit_code == 0, r.output
        report = json.loads(r.output[r.output.index("{"):])
        assert not report["errors"] and len(report["results"]) == 3, r.output
        assert {row["label"] for row in report["results"]} <= {"gram_negative", "gram_positive"}, r.output
    # the op profile names what falls out of XNNPACK in full int8 (LayerNorm statistics at least)
    r = runner.invoke(main, ["profile", str(next(tfl.glob("*__int8.tflite"))), "--runs", "1",
                             "--csv", str(tmp_path / "ops.csv")])
    assert r.exit_code == 0, r.output
    assert "partition" in r.output and "RSQRT" in (tmp_path / "ops.csv").read_text(), r.output


# the smallest of each family at its smallest input, for the optimisation paths
SMALL = [("poolformer_s12", 32), ("mobilevit_xxs", 64), ("swin_tiny", 224), ("beit_base", 32)]


@pytest.mark.parametrize("name,size", SMALL)
def test_pruning_and_partial_qat_cover_the_projections(name, size):
    """TF-MOT prunes every convolution / projection kernel and quantize-aware-trains what its registry
    supports; the glue layers declare no prunable weights and stay float in partial QAT."""
    import tf_keras

    from gram_tf.optimize import prunable_layer_report, quantize_aware

    model, _ = build_classifier(name, 2, size, weights="none")
    report = prunable_layer_report(model)
    kernels = {layer.name for layer in model.layers
               if isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense))
               and not isinstance(layer, tf_keras.layers.DepthwiseConv2D)}
    assert kernels <= set(report["prunable"]), sorted(kernels - set(report["prunable"]))
    glue = {s["layer"]: s["reason"] for s in report["skipped"]}
    assert glue and all("no prunable weights" in r or "depthwise" in r.lower() or "BatchNorm" in r
                        or "normalization" in r.lower() for r in glue.values()), glue
    if name in ("poolformer_s12", "mobilevit_xxs"):  # partial QAT: the transformers' layer types are covered by test_vit
        qat, qreport = quantize_aware(model)
        assert qreport["quantizable"] and qreport["float"]
        assert qat.count_params() >= model.count_params()
        # pruning-preserving QAT (pqat-int8): TF-MOT's scheme took every weight-free layer (GELU, the
        # attention core) as supported and then failed on it; the zeros of a pruned kernel survive training
        # (trained on PoolFormer only: the scheme's training step is the same for every architecture, and
        # one epoch of MobileViT's QAT graph cost the suite 35 s)
        dense = next(layer for layer in model.layers if isinstance(layer, tf_keras.layers.Dense)
                     and layer.name in report["prunable"])
        kernel, *rest = dense.get_weights()
        mask = np.random.default_rng(0).random(kernel.shape) < 0.5
        dense.set_weights([np.where(mask, 0.0, kernel).astype(np.float32), *rest])
        pqat, _ = quantize_aware(model, preserve_sparsity=True)
        if name != "poolformer_s12":
            return
        pqat.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
        x = np.random.default_rng(1).standard_normal((4, size, size, 3)).astype(np.float32)
        pqat.fit(x, np.eye(2, dtype=np.float32)[[0, 1, 0, 1]], epochs=1, verbose=0)
        trained = next(w for w in pqat.weights if w.name.startswith(dense.name + "/") and "kernel" in w.name)
        assert np.all(trained.numpy()[mask] == 0) and np.any(trained.numpy()[~mask] != kernel[~mask])
