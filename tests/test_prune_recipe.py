"""The pruning recipe for pretrained backbones: BatchNorm folding, least-squares refit, layer
sensitivity and per-layer allocation, distillation, the --max-drop choice."""
import json

import numpy as np
import pytest

from gram_tf.config import PruneConfig
from gram_tf.optimize import (allocate, fold_batchnorm, measure_sensitivity, measure_sparsity, pick_within_budget,
                              prune_run)
from gram_tf.optimize.finetune import distillation_loss, learning_rate_at
from gram_tf.optimize.reconstruct import prune_and_refit
from gram_tf.models import load_model

IDENTITY_PRE = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 1.0, "offset": 0.0,
                "resize": "squash", "channel_order": "RGB"}


def _conv_bn_model(seed=0):
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    x = inp = tf_keras.Input((12, 12, 3), name="image")
    x = tf_keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="c1")(x)
    x = tf_keras.layers.BatchNormalization(name="bn1")(x)
    x = tf_keras.layers.ReLU(6.0)(x)
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False, name="dw")(x)
    x = tf_keras.layers.BatchNormalization(name="bn2")(x)
    x = tf_keras.layers.Conv2D(6, 1, name="pw")(x)  # with its own bias
    x = tf_keras.layers.BatchNormalization(name="bn3")(x)
    shared = x
    x = tf_keras.layers.Add()([shared, tf_keras.layers.BatchNormalization(name="bn_branch")(shared)])
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    out = tf_keras.layers.Dense(3, activation="softmax", name="head_dense")(x)
    model = tf_keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # statistics far from the defaults, as after ImageNet training
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.1, 3.0, n), rng.normal(0, 1, n), rng.normal(0, 2, n),
                               rng.uniform(0.01, 9.0, n)])
    return model


def test_fold_batchnorm_keeps_the_function_and_removes_foldable_bn():
    model = _conv_bn_model()
    folded, pairs = fold_batchnorm(model)
    assert sorted(pairs) == [("c1", "bn1"), ("dw", "bn2"), ("pw", "bn3")]
    names = [l.name for l in folded.layers]
    # a BatchNorm that follows an Add branch (not a lone conv output) stays
    assert "bn_branch" in names and not {"bn1", "bn2", "bn3"} & set(names)
    x = np.random.default_rng(1).normal(0, 1, (4, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), atol=2e-5)
    assert folded.get_layer("c1").use_bias and folded.get_layer("dw").use_bias


def test_refit_recovers_a_sparse_layer_and_beats_masking():
    rng = np.random.default_rng(0)
    f, c, n = 24, 5, 600
    x = rng.normal(0, 1, (n, f)) + rng.normal(0, 1, (n, 1))  # correlated inputs, as activations are
    true = rng.normal(0, 1, (f, c)) * (rng.random((f, c)) < 0.25)
    y = x @ true + 0.5
    # the dense layer is the truth plus many small spurious weights
    dense = true + rng.normal(0, 0.05, (f, c))
    k, b, info = prune_and_refit(dense, np.zeros(c), x, y, sparsity=0.75)
    assert info["refit"] and info["ridge"] <= 1e-2
    assert np.all(np.sum(k == 0, axis=0) == 18)
    masked = dense * (k != 0)
    err_refit = np.linalg.norm(x @ k + b - y) / np.linalg.norm(y)
    err_mask = np.linalg.norm(x @ masked - y) / np.linalg.norm(y)
    assert err_refit < 0.06 and err_refit < 0.25 * err_mask, (err_refit, err_mask)
    # fewer rows than kept weights: never an exact fit to a handful of samples; held-out rows
    # are predicted at least as well as by the masked dense weights
    k_few, b_few, info = prune_and_refit(dense, np.zeros(c), x[:8], y[:8], sparsity=0.75)
    assert np.all(np.sum(k_few == 0, axis=0) == 18)
    held = slice(100, None)
    err_few = np.linalg.norm(x[held] @ k_few + b_few - y[held])
    assert err_few <= np.linalg.norm(x[held] @ (dense * (k_few != 0)) - y[held]) * 1.05 or not info["refit"]


def _redundant_then_important(seed=0):
    """x -> 'redundant' (identity plus tiny noise: mostly near-zero weights) -> 'important' (a dense
    random map that defines the labels)."""
    import tf_keras

    rng = np.random.default_rng(seed)
    inp = tf_keras.Input((8,))
    h = tf_keras.layers.Dense(8, name="redundant")(inp)
    out = tf_keras.layers.Dense(3, activation="softmax", name="important")(h)
    model = tf_keras.Model(inp, out)
    w_imp = rng.normal(0, 3, (8, 3))
    model.get_layer("redundant").set_weights([np.eye(8) + rng.normal(0, 1e-3, (8, 8)), np.zeros(8)])
    model.get_layer("important").set_weights([w_imp, np.zeros(3)])
    x = rng.normal(0, 1, (300, 8)).astype("float32")
    y = np.argmax(x @ w_imp, axis=1)
    return model, x, y


def test_sensitivity_ranks_the_layer_that_hurts_and_allocation_spares_it(monkeypatch):
    import gram_tf.optimize.sensitivity as sensitivity_mod

    model, x, y = _redundant_then_important()
    # vectors, not images: evaluate the model on them as they are
    from gram_tf.metrics import classification_metrics

    def evaluate(m, xs, ys, pre, labels):
        return classification_metrics(ys, m.predict(xs, verbose=0), labels)

    monkeypatch.setattr(sensitivity_mod, "evaluate_keras", evaluate)
    sens = measure_sensitivity(model, ["redundant", "important"], [0.5, 0.8], x, y, {}, progress=False)
    base = sens["baseline"]["loss"]
    rise = {n: np.array(r["loss"]) - base for n, r in sens["layers"].items()}
    assert np.all(rise["important"] > rise["redundant"] + 0.05)
    assert sens["layers"]["redundant"]["accuracy"][0] == pytest.approx(sens["baseline"]["accuracy"], abs=0.01)
    # weights restored after probing
    assert np.count_nonzero(model.get_layer("important").kernel.numpy()) == 24
    per_layer = allocate(sens, 0.5)
    assert per_layer["redundant"] > per_layer["important"]
    params = {"redundant": 64, "important": 24}
    mean = sum(per_layer[n] * params[n] for n in params) / sum(params.values())
    assert mean == pytest.approx(0.5, abs=0.006)


def test_max_drop_picks_the_sparsest_level_within_budget():
    sweep = [{"sparsity_target": 0.5, "val_accuracy": 0.95}, {"sparsity_target": 0.7, "val_accuracy": 0.945},
             {"sparsity_target": 0.8, "val_accuracy": 0.90}, {"sparsity_target": 0.9, "val_accuracy": 0.944},
             {"sparsity_target": 0.95, "val_accuracy": 0.5}]
    assert pick_within_budget(sweep, 0.952, 1.0)["sparsity_target"] == 0.9
    assert pick_within_budget(sweep, 0.952, 0.5)["sparsity_target"] == 0.5
    assert pick_within_budget(sweep, 0.952, 0.1) is None
    assert pick_within_budget(sweep, 0.95, 0.0)["sparsity_target"] == 0.5


def test_learning_rate_schedule_and_distillation_loss():
    import tensorflow as tf

    lrs = [learning_rate_at(s, 100, 1e-3, "cosine", 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3) and lrs[-1] < 1e-5
    assert np.argmax(lrs) == 9 and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert learning_rate_at(50, 100, 1e-3, "constant", 0.1) == 1e-3
    y = tf.constant([[0.0, 1.0], [1.0, 0.0]])
    p = tf.constant([[0.2, 0.8], [0.6, 0.4]])
    ce = float(tf.reduce_mean(tf.keras.losses.categorical_crossentropy(y, p)))
    assert float(distillation_loss(y, p, p, 0.0, 2.0)) == pytest.approx(ce)
    # the student equal to its teacher: only the label term is left
    assert float(distillation_loss(y, p, p, 0.5, 2.0)) == pytest.approx(0.5 * ce, rel=1e-4)
    assert float(distillation_loss(y, p, tf.constant([[0.9, 0.1], [0.1, 0.9]]), 0.5, 2.0)) > 0.5 * ce + 0.1


def test_folded_refit_run_is_consistent_with_its_tflite(tiny_run, tmp_path):
    """After the fine-tune the pruned model carries no BatchNorm after a pruned layer (its kernels are
    the folded ones the .tflite runs), the converter keeps every zero, and --max-drop's choice file
    names a level of the sweep."""
    from gram_tf.convert import export_artifact
    from gram_tf.deploy import Classifier
    from gram_tf.run import load_run

    cfg = PruneConfig(levels=[0.7], epochs=1, batch_size=16, max_drop_pp=100.0)
    [summary] = prune_run(tiny_run, cfg, progress=False, levels=[0.7])
    out = tiny_run / "pruned_70"
    report = json.loads((out / "sparsity_report.json").read_text())
    assert summary["method"] == "refit" and summary["batchnorm_folded"] > 0 and summary["refit_layers"] > 0
    assert all(v["rel_error_after"] <= v["rel_error_before"] + 1e-6 for v in report["refit"].values())
    model = load_model(out / "model.keras")
    import tf_keras

    bn_inputs = {l.input.node.layer.name for l in model.layers if isinstance(l, tf_keras.layers.BatchNormalization)}
    assert not bn_inputs & set(report["pruned"])
    # per-layer sparsity from the sensitivity measurement (the default), each layer at its own target
    # and the pruned layers together at the level asked for
    targets = report["per_layer_target"]
    assert len(set(targets.values())) > 1 and summary["allocation"] == "sensitivity"
    for name in report["pruned"]:
        k = model.get_layer(name).get_weights()[0]
        assert np.mean(k == 0) == pytest.approx(targets[name], abs=0.03), name
    assert summary["pruned_layers_sparsity"] == pytest.approx(0.7, abs=0.01)
    choice = json.loads((tiny_run / "pruning_choice.json").read_text())
    assert choice["chosen"]["sparsity_target"] == 0.7 and choice["max_drop_pp"] == 100.0
    # the fp32 .tflite holds exactly the Keras kernels: same zeros, same outputs
    run = load_run(out)
    path = tmp_path / "p.tflite"
    export_artifact(model, path, "fp32", size=run["input_size"], preprocessing=run["preprocessing"],
                    labels=run["labels"], backbone=run["backbone"])
    clf = Classifier(path)
    x = np.random.default_rng(0).integers(0, 256, (2, run["input_size"], run["input_size"], 3), dtype=np.uint8)
    from gram_tf.data import normalize_tf

    keras_p = model.predict(normalize_tf(x.astype("float32"), run["preprocessing"]), verbose=0)
    tfl_p = clf.predict_arrays(x)
    np.testing.assert_allclose(tfl_p, keras_p, atol=1e-4)
    assert measure_sparsity(model)["overall"] == pytest.approx(summary["sparsity"])


def test_recipe_keys_are_validated(tmp_path):
    from gram_tf.config import load_config
    from gram_tf.errors import GramTFError

    cfg = load_config("configs/quickstart.yaml", ["prune.max_drop_pp=1", "prune.method=gradual"])
    assert cfg.prune.max_drop_pp == 1.0 and cfg.prune.method == "gradual"
    for bad, msg in (("prune.method=magic", "prune.method"), ("prune.max_drop_pp=-1", "max_drop_pp"),
                     ("prune.distill=1.5", "prune.distill"), ("prune.sensitivity_levels=[0.5,1.2]", "sensitivity_levels"),
                     ("prune.batchnorm=fused", "prune.batchnorm")):
        with pytest.raises(GramTFError, match=msg):
            load_config("configs/quickstart.yaml", [bad])


def test_cli_sensitivity_table_and_plot(tiny_run):
    from click.testing import CliRunner

    from gram_tf.cli import main

    res = CliRunner().invoke(main, ["prune", str(tiny_run), "--sensitivity", "--set", "prune.sensitivity_levels=[0.5,0.9]"])
    assert res.exit_code == 0, res.output
    assert "dloss@90" in res.output and "head_dense" in res.output
    sens = json.loads((tiny_run / "sensitivity.json").read_text())
    assert sens["levels"] == [0.5, 0.9] and (tiny_run / "sensitivity.png").stat().st_size > 1000
    assert "sparsity_target" not in res.output  # no level given: measured, nothing pruned
