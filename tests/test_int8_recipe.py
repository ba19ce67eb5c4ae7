"""Int8 that keeps its accuracy: cross-layer equalization, bias correction, and activation range
calibration through the calibrate-only route (issue 16)."""
import json

import numpy as np
import pytest

from gram_tf.config import ConvertConfig, load_config
from gram_tf.convert import convert_model, convert_run
from gram_tf.convert.calibration import (Calibration, calibrate_only, calibrated_ranges, histogram,
                                         quantize_calibrated, range_from_histogram, set_ranges, tensor_ranges)
from gram_tf.convert import representative_gen
from gram_tf.convert.recipe import Int8Recipe, resolve_recipe
from gram_tf.errors import GramTFError
from gram_tf.optimize import channel_range_spread, correct_bias, equalize, fold_batchnorm, quantized_kernel

IDENTITY_PRE = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 1.0 / 255.0, "offset": 0.0,
                "resize": "squash", "channel_order": "RGB"}


def _mobile_block(cap=6.0, seed=0, dead=True, logits=False):
    """conv-BN-ReLU(cap) -> pad -> depthwise-BN-ReLU(cap) -> conv-BN -> GAP -> dense, with BatchNorm
    scales spread over three orders of magnitude (what makes per-tensor int8 collapse)."""
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    x = inp = tf_keras.Input((16, 16, 3), name="image")
    x = tf_keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="c1")(x)
    x = tf_keras.layers.BatchNormalization(name="bn1")(x)
    x = tf_keras.layers.ReLU(cap, name="r1")(x)
    x = tf_keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = tf_keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    x = tf_keras.layers.BatchNormalization(name="bn2")(x)
    x = tf_keras.layers.ReLU(cap, name="r2")(x)
    x = tf_keras.layers.Conv2D(6, 1, use_bias=False, name="pw")(x)
    x = tf_keras.layers.BatchNormalization(name="bn3")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = tf_keras.layers.Dense(3, activation=None if logits else "softmax", name="head_dense")(x)
    model = tf_keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma = 10.0 ** rng.uniform(-2, 1, n)
            beta = rng.normal(0.5, 0.5, n)
            if dead and layer.name == "bn1":
                gamma[2], beta[2] = 1e-30, -1.0  # a channel ReLU always sends to 0 (as ImageNet BN leaves)
            layer.set_weights([gamma, beta, rng.normal(0, 0.5, n), rng.uniform(0.2, 2.0, n)])
    return model


def _images(n, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, 16, 16, 3)).astype("float32")


# ---- cross-layer equalization ------------------------------------------------------------------

def test_equalize_keeps_the_function_and_evens_out_channel_ranges():
    model = _mobile_block(cap=None)  # plain ReLU: equalization is exact for any input
    x = _images(8)
    folded, _ = fold_batchnorm(model)
    eq, report = equalize(model)
    assert report["pairs"] == 3  # c1 -> dw (through ReLU and padding), dw -> pw, pw -> head (through GAP)
    assert report["dead_inputs_zeroed"] == 1
    np.testing.assert_allclose(eq(x).numpy(), model(x, training=False).numpy(), atol=1e-5)
    before, after = channel_range_spread(folded), channel_range_spread(eq)
    assert after["worst"] > 5 * before["worst"] and after["median"] > before["median"]
    # the equalized pair's ranges match channel by channel (up to the dead channel)
    k1 = np.abs(eq.get_layer("c1").get_weights()[0]).reshape(-1, 8).max(0)
    k2 = np.abs(eq.get_layer("dw").get_weights()[0]).max(axis=(0, 1, 3))
    live = k2 > 0
    np.testing.assert_allclose(k1[live], k2[live], rtol=0.05)


def test_data_aware_equalization_keeps_relu6_caps_and_activation_ranges():
    import tf_keras

    model = _mobile_block(cap=6.0)
    x = _images(16)
    eq, report = equalize(model, x)
    assert report["relu6_lifted"] == [] and report["data_aware"]
    assert eq.get_layer("r1").get_config()["max_value"] == 6.0
    np.testing.assert_allclose(eq(x).numpy(), model(x, training=False).numpy(), atol=1e-5)
    folded, _ = fold_batchnorm(model)
    for name in ("r1", "r2"):  # no channel grows past the tensor's measured peak
        peak = np.max(tf_keras.Model(folded.input, folded.get_layer(name).output)(x))
        assert np.max(tf_keras.Model(eq.input, eq.get_layer(name).output)(x)) <= peak * (1 + 1e-5)
    # data-free, the caps would have to go (the paper's choice), and the report says which
    _, free = equalize(model)
    assert set(free["relu6_lifted"]) == {"r1", "r2"}


def _folded_block():
    folded, _ = fold_batchnorm(_mobile_block(cap=None, dead=False))
    return folded


def _set(model, name, fn):
    layer = model.get_layer(name)
    weights = layer.get_weights()
    fn(weights)
    layer.set_weights(weights)


def test_equalize_zeroes_channels_nothing_reads_backwards_along_the_chain():
    model = _folded_block()
    _set(model, "pw", lambda w: w[0].__setitem__((slice(None), slice(None), [1, 4]), 0.0))  # pruned inputs
    x = _images(8)
    eq, report = equalize(model)
    # pw ignores inputs 1 and 4: dw's channels 1 and 4 go, and then c1's channels that only fed them
    assert report["unread_outputs_zeroed"] == 4
    for name in ("c1", "dw"):
        kernel, bias = eq.get_layer(name).get_weights()
        assert not kernel[..., [1, 4], :].any() if name == "dw" else not kernel[..., [1, 4]].any()
        assert not bias[[1, 4]].any()
        assert kernel.any()  # the other channels stay
    np.testing.assert_allclose(eq(x).numpy(), model(x).numpy(), atol=1e-5)


def _block_behind_an_empty_kernel(dw_range):
    """c1's channel 0 pruned empty (the constant relu(0.5)); dw's weights on it at +-dw_range."""
    model = _folded_block()

    def empty_channel(w):
        w[0][..., 0] = 0.0
        w[1][0] = 0.5

    _set(model, "c1", empty_channel)
    _set(model, "dw", lambda w: w[0].__setitem__((slice(None), slice(None), 0), dw_range * np.sign(w[0][:, :, 0])))
    return model


@pytest.mark.parametrize("data_aware", [False, True])
def test_equalize_brings_the_channel_behind_an_empty_kernel_in_line(data_aware):
    model = _block_behind_an_empty_kernel(100.0)
    x = _images(16)
    eq, _ = equalize(model, x if data_aware else None)
    ranges = np.abs(eq.get_layer("dw").get_weights()[0]).max(axis=(0, 1, 3))
    target = ranges[1:].max()  # the pair's largest equalized range; left alone it would be 100
    if data_aware:  # ...as far as the bound allows: the constant may not grow past the tensor's peak
        import tf_keras

        peak = float(np.max(tf_keras.Model(model.input, model.get_layer("r1").output)(x)))
        target = max(target, 100.0 * 0.5 / peak)
    assert ranges[0] <= target * 1.001 and ranges[0] < 100.0 * 0.99
    np.testing.assert_allclose(eq(x).numpy(), model(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("data_aware", [False, True])
def test_equalize_never_scales_up_the_channel_behind_an_empty_kernel(data_aware):
    # scaling it up would shrink the constant in A's output and multiply its int8 rounding into B
    model = _block_behind_an_empty_kernel(0.01)
    x = _images(16)
    eq, _ = equalize(model, x if data_aware else None)
    # the constant keeps its size (its B channel's range also moves with the dw -> pw pair)
    assert eq.get_layer("c1").get_weights()[1][0] == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_allclose(eq(x).numpy(), model(x).numpy(), atol=1e-5)

# ---- bias correction ---------------------------------------------------------------------------

def _with_int8_weights(model, per_channel):
    """A copy of `model` whose kernels are rounded as the converter rounds them."""
    import tf_keras

    copy = tf_keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense"):
            w = layer.get_weights()
            w[0] = quantized_kernel(type(layer).__name__, w[0], per_channel)
            layer.set_weights(w)
    return copy


@pytest.mark.parametrize("inputs", ["float", "quantized"])
def test_bias_correction_moves_the_int8_mean_output_toward_float(inputs):
    model = _mobile_block(cap=None, logits=True)
    x = _images(64)
    reference = model(x, training=False).numpy().mean(0)
    folded, _ = fold_batchnorm(model)
    plain = _with_int8_weights(folded, per_channel=False)(x).numpy().mean(0)
    corrected_model, report = correct_bias(model, x, per_channel=False, inputs=inputs)
    corrected = _with_int8_weights(corrected_model, per_channel=False)(x).numpy().mean(0)
    assert report["layers"] == 4
    assert np.abs(corrected - reference).max() < 0.5 * np.abs(plain - reference).max()
    # only biases move: the kernels (what the converter rounds) are the folded ones
    np.testing.assert_array_equal(corrected_model.get_layer("dw").get_weights()[0], folded.get_layer("dw").get_weights()[0])


def test_quantized_kernel_matches_tflite_rounding():
    k = np.array([[[[0.5, 0.002]], [[-1.0, 0.003]]]], np.float32)  # (1, 2, 1, 2): out channels last
    per_tensor = quantized_kernel("Conv2D", k, per_channel=False)
    np.testing.assert_allclose(per_tensor, np.round(k / (1.0 / 127)) * (1.0 / 127), atol=1e-7)
    assert not per_tensor[..., 1].any()  # the narrow channel rounds to zero with one scale
    per_channel = quantized_kernel("Conv2D", k, per_channel=True)
    np.testing.assert_allclose(per_channel[..., 1], k[..., 1], atol=0.003 / 127 / 2 + 1e-9)
    assert quantized_kernel("Conv2D", np.array([0.5 / 127, -0.5 / 127, 1.0], np.float32), False).tolist() == \
        pytest.approx([1 / 127, -1 / 127, 1.0])  # halves round away from zero, as TFLite does


# ---- calibration methods on known distributions ------------------------------------------------

def _range(values, **kw):
    lo, hi = float(values.min()), float(values.max())
    bins = kw.get("bins", 2048)
    return range_from_histogram(histogram(values, lo, hi, bins), np.linspace(lo, hi, bins + 1), Calibration(**kw))


def test_minmax_and_percentile_ranges():
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 1, 1_000_000)
    assert _range(u, method="minmax") == (pytest.approx(u.min()), pytest.approx(u.max()))
    lo, hi = _range(u, method="percentile", percentile=99.0)
    assert lo == pytest.approx(u.min()) and hi == pytest.approx(0.99, abs=2e-3)  # non-negative: upper tail only
    g = rng.normal(0, 1, 1_000_000)
    lo, hi = _range(g, method="percentile", percentile=99.9)
    assert lo == pytest.approx(-3.09, abs=0.05) and hi == pytest.approx(3.09, abs=0.05)


@pytest.mark.parametrize("dist,optimum", [("normal", 3.92), ("laplace", 9.89)])
def test_mse_range_is_the_8bit_optimum(dist, optimum):
    """Banner et al. (ACIQ): the clipping value minimising 8-bit quantization MSE is 3.92 sigma for a
    Gaussian and 9.89 b for a Laplace distribution."""
    rng = np.random.default_rng(0)
    x = getattr(rng, dist)(0, 1, 1_000_000)
    x = np.concatenate([x, -x])  # symmetric extremes: the family [a lo, a hi] is symmetric
    lo, hi = _range(x, method="mse", candidates=512)
    assert lo == pytest.approx(-hi)
    assert hi == pytest.approx(optimum, rel=0.04)


def test_entropy_range_keeps_a_flat_distribution_and_drops_rare_outliers():
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 1, 500_000)
    assert _range(u, method="entropy")[1] >= 0.97
    spiky = np.concatenate([rng.normal(0, 1, 500_000), [60.0] * 20, [-60.0] * 20])
    lo, hi = _range(spiky, method="entropy")
    assert 3.0 < hi < 15.0 and -15.0 < lo < -3.0


def test_meanmax_range_is_the_mean_of_each_samples_extremes():
    """Samples of n values from U(-1, 1): E[max] = 1 - 2 / (n + 1), E[min] its negative; one
    extreme sample moves the range by its share only. A non-negative tensor keeps its lower end."""
    from gram_tf.convert.calibration import range_from_extremes

    rng = np.random.default_rng(0)
    samples = rng.uniform(-1, 1, (20_000, 9))
    lo, hi = range_from_extremes(samples.min(1), samples.max(1), samples.min(), samples.max())
    assert lo == pytest.approx(-0.8, abs=0.01) and hi == pytest.approx(0.8, abs=0.01)
    samples[0, 0] = 20_000.0  # one image with an outlier: minmax would take 20000
    assert range_from_extremes(samples.min(1), samples.max(1), samples.min(), samples.max())[1] == pytest.approx(1.8, abs=0.01)
    relu = np.maximum(samples, 0.0)
    assert range_from_extremes(relu.min(1), relu.max(1), 0.0, relu.max())[0] == 0.0
    assert range_from_extremes(np.array([0.5]), np.array([1.0]), -1.0, 2.0) == (0.0, 1.0)  # zero stays inside


def test_calibration_settings_are_validated():
    with pytest.raises(GramTFError, match="unknown method"):
        Calibration("kl")
    assert "search" in Calibration("search").as_dict()["method"]
    with pytest.raises(GramTFError, match="percentile"):
        Calibration("percentile", percentile=20)


# ---- the calibrate-only route ------------------------------------------------------------------

def test_calibrate_only_route_gives_back_the_ranges_it_was_given():
    """Pins TFLite's private calibrate-only + mlir_quantize behaviour: min/max written into the
    calibrated model come back as the quantized tensors' scale and zero point, and with the
    converter's own ranges the route gives the converter's int8 model."""
    model = _mobile_block(cap=6.0)
    rep = (np.random.default_rng(2).uniform(0, 255, (12, 16, 16, 3))).astype("uint8")
    gen = representative_gen(rep, IDENTITY_PRE)
    calibrated = calibrate_only(model, 16, gen)
    ranges = calibrated_ranges(calibrated)
    assert ranges and all(lo <= hi for lo, hi in ranges.values())
    from gram_tf.convert.calibration import _model_object

    tensors = _model_object(calibrated).subgraphs[0].tensors
    names = {i: tensors[i].name.decode() for i in ranges}
    assert not any("image" == names[i] for i in ranges)  # the input keeps its range
    wanted = {i: (lo * 0.5, hi * 0.25) for i, (lo, hi) in list(ranges.items())[:3]}
    quantized = quantize_calibrated(set_ranges(calibrated, wanted), per_channel=True, io_type="int8")
    got = tensor_ranges(quantized)
    for i, (lo, hi) in wanted.items():
        glo, ghi = got[names[i]]
        step = (hi - lo) / 255
        assert glo == pytest.approx(lo, abs=1.01 * step) and ghi == pytest.approx(hi, abs=1.01 * step)
    # minmax through the route == the converter's own int8
    from gram_tf.deploy import Classifier  # noqa: F401  (LiteRT only)
    route = quantize_calibrated(calibrated, per_channel=True, io_type="int8")
    direct = convert_model(model, "int8", 16, IDENTITY_PRE, rep, "int8")
    assert tensor_ranges(route) == tensor_ranges(direct)


def test_meanmax_through_the_route_averages_what_each_image_alone_calibrates_to():
    from gram_tf.convert.calibration import _model_object, recalibrate

    model = _mobile_block(cap=6.0)
    rep = (np.random.default_rng(3).uniform(0, 255, (5, 16, 16, 3))).astype("uint8")
    calibrated = calibrate_only(model, 16, representative_gen(rep, IDENTITY_PRE))
    edited, report = recalibrate(calibrated, representative_gen(rep, IDENTITY_PRE), Calibration("meanmax"))
    assert report["method"] == "meanmax" and report["tensors"] > 0

    def named(blob):
        tensors = _model_object(blob).subgraphs[0].tensors
        return {tensors[i].name.decode(): r for i, r in calibrated_ranges(blob).items()}

    # the converter's calibration of each image alone: that image's min and max per tensor
    alone = [named(calibrate_only(model, 16, representative_gen(rep[k : k + 1], IDENTITY_PRE))) for k in range(len(rep))]
    got, full = named(edited), named(calibrated)
    for name, (lo, hi) in got.items():
        want_lo = min(float(np.mean([a[name][0] for a in alone])), 0.0) if full[name][0] < 0 else full[name][0]
        want_hi = max(float(np.mean([a[name][1] for a in alone])), 0.0) if full[name][1] > 0 else full[name][1]
        assert lo == pytest.approx(want_lo, rel=1e-4, abs=1e-6) and hi == pytest.approx(want_hi, rel=1e-4, abs=1e-6)
    assert any(got[n][1] < full[n][1] * 0.999 for n in got)  # narrower than the pooled min/max somewhere


def test_recipe_resolution_and_config_keys(tmp_path):
    cfg = ConvertConfig()
    assert resolve_recipe(cfg, per_channel=False).tag() == "cle+bc+percentile"
    assert resolve_recipe(cfg, per_channel=True).trivial
    assert resolve_recipe(cfg, per_channel=True, pruned=True).tag() == "cle+bc"
    # a pruned run's per-tensor int8 picks its ranges on validation, where there is a validation split
    assert resolve_recipe(cfg, per_channel=False, pruned=True, searchable=True).tag() == "cle+bc+search"
    assert resolve_recipe(cfg, per_channel=False, pruned=True).tag() == "cle+bc+percentile"
    assert resolve_recipe(cfg, per_channel=False, searchable=True).tag() == "cle+bc+percentile"
    assert resolve_recipe(cfg, per_channel=True, pruned=True, searchable=True).tag() == "cle+bc"
    assert resolve_recipe(ConvertConfig(equalize="never", bias_correction="never", calibration="minmax"),
                          per_channel=False).trivial
    cfg = ConvertConfig(equalize="never", bias_correction="float", calibration="mse")
    assert resolve_recipe(cfg, per_channel=True).tag() == "bc(float)+mse"
    assert Int8Recipe().tag() == "minmax"
    bad = tmp_path / "bad.yaml"
    bad.write_text("convert:\n  calibration: kl\n")
    with pytest.raises(GramTFError, match="convert.calibration"):
        load_config(bad)
    bad.write_text("convert:\n  calibration_percentile: 30\n")
    with pytest.raises(GramTFError, match="calibration_percentile"):
        load_config(bad)


def test_auto_bias_correction_measures_with_float_inputs_where_one_pass_per_layer_is_too_dear(monkeypatch):
    """`quantized` bias correction runs the images once per layer: `auto` and int8-fast's recipe search
    fall back to `float` inputs (one pass) above QUANTIZED_BC_MAX_GMAC, e.g. for BEiT-base."""
    from gram_tf.convert import recipe
    from gram_tf.convert.fast_int8 import recipe_alternatives
    from gram_tf.models import count_macs

    model = _mobile_block()
    layers = sum(type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense") for layer in model.layers)
    cost = layers * 64 * count_macs(model) / 1e9
    assert recipe.bias_correction_inputs(model) == "quantized"
    assert resolve_recipe(ConvertConfig(), per_channel=False, model=model).tag() == "cle+bc+percentile"
    monkeypatch.setattr(recipe, "QUANTIZED_BC_MAX_GMAC", cost * 0.99)
    assert recipe.bias_correction_inputs(model) == "float"
    assert recipe.bias_correction_inputs(model, images=63) == "quantized"
    assert resolve_recipe(ConvertConfig(), per_channel=False, model=model).tag() == "cle+bc(float)+percentile"
    # an explicit choice is kept
    assert resolve_recipe(ConvertConfig(bias_correction="quantized"), per_channel=False, model=model).tag() \
        == "cle+bc+percentile"
    tags = [r.tag() for r in recipe_alternatives(None, "float")]
    assert "bc(float)" in tags and not any(t.startswith("bc+") or t == "bc" or "+bc+" in t for t in tags)
    assert tags[-1] == "meanmax"  # last: it helps EfficientNet and collapses DeiT (docs/quantization.md)


def test_convert_run_applies_and_records_the_recipe(tiny_run, tmp_path):
    out = tmp_path / "art"
    manifest = convert_run(tiny_run, ["int8", "int8-per-tensor"], out,
                           ConvertConfig(calibration="percentile", check_samples=8), progress=False)
    by_variant = {a["variant"]: a for a in manifest["artifacts"]}
    per_tensor = by_variant["int8-per-tensor"]["int8_recipe"]
    assert per_tensor["tag"] == "cle+bc+percentile"
    assert per_tensor["applied"]["equalize"]["pairs"] > 0
    assert per_tensor["applied"]["calibration"]["tensors"] > 0
    assert by_variant["int8"]["int8_recipe"]["tag"] == "percentile"
    sidecar = json.loads((out / (by_variant["int8"]["file"] + ".json")).read_text())
    assert sidecar["artifact"]["int8_recipe"]["requested"]["calibration"]["method"] == "percentile"
    for a in manifest["artifacts"]:
        assert a["top1_agreement"] is not None
    # resuming with another recipe converts again; with the same one it does not
    again = convert_run(tiny_run, ["int8"], out, ConvertConfig(calibration="percentile", check_samples=8),
                        progress=False, skip_existing=True)
    assert again["artifacts"][0]["sha256"] == by_variant["int8"]["sha256"]
    changed = convert_run(tiny_run, ["int8"], out, ConvertConfig(check_samples=8), progress=False,
                          skip_existing=True)
    assert changed["artifacts"][0]["int8_recipe"]["tag"] == "minmax"


def test_calibration_search_keeps_the_method_most_accurate_on_validation(monkeypatch):
    """`search` quantizes with each candidate method and keeps the best validation accuracy
    (ties: the earlier candidate); every try is recorded."""
    from gram_tf.convert import recipe, scoring
    from gram_tf.convert.calibration import SEARCH_CANDIDATES, tensor_ranges

    model = _mobile_block(logits=False)
    rep = np.random.default_rng(2).uniform(0, 255, (12, 16, 16, 3)).astype("uint8")
    val = (rep[:6], np.arange(6) % 3)
    scores = iter([0.5, 0.8, 0.8, 0.6, 0.1])  # percentile 99.99, 99.9, 99.999, minmax, mse
    blobs = []

    def fake_accuracy(blob, images, y, labels, size, preprocessing):
        assert images is val[0] and len(labels) == 3
        blobs.append(blob)
        return next(scores)

    monkeypatch.setattr(scoring, "blob_accuracy", fake_accuracy)
    plan = Int8Recipe(calibration=Calibration("search"))
    assert plan.tag() == "search"
    blob, report = recipe.full_integer(model, 16, IDENTITY_PRE, rep, plan, per_channel=False, validation=val)
    tried = report["applied"]["calibration"]["search"]
    assert [t["val_accuracy"] for t in tried] == [0.5, 0.8, 0.8, 0.6, 0.1]
    assert [(t["method"], t.get("percentile")) for t in tried] == list(SEARCH_CANDIDATES)
    assert report["applied"]["calibration"]["method"] == "percentile"
    assert report["applied"]["calibration"]["percentile"] == 99.9
    assert blob == blobs[1]  # the first of the two best, not the last one tried
    # the candidates really differ: percentile 99.9 clips ranges minmax keeps
    assert tensor_ranges(blobs[1]) != tensor_ranges(blobs[3])
    with pytest.raises(GramTFError, match="validation"):
        recipe.full_integer(model, 16, IDENTITY_PRE, rep, plan, per_channel=False)


def test_convert_run_searches_calibration_on_the_validation_split(tiny_run, tmp_path):
    from gram_tf import data as data_mod
    from gram_tf.deploy import Classifier
    from gram_tf.run import load_run

    manifest = convert_run(tiny_run, ["int8-per-tensor"], tmp_path / "art",
                           ConvertConfig(calibration="search", check_samples=8), progress=False)
    [art] = manifest["artifacts"]
    cal = art["int8_recipe"]["applied"]["calibration"]
    assert art["int8_recipe"]["tag"] == "cle+bc+search" and len(cal["search"]) == 5
    best = max(t["val_accuracy"] for t in cal["search"])
    run = load_run(tiny_run)
    x, y, _ = data_mod.load_split(data_mod.read_manifest(run["manifest"]), "val", run["input_size"],
                                  run["preprocessing"]["resize"], progress=False)
    kept = float((Classifier(art["path"]).predict_arrays(x).argmax(1) == y).mean())
    assert kept == pytest.approx(best, abs=1e-4)


def test_a_recipe_the_model_cannot_take_is_a_one_line_error(monkeypatch):
    import gram_tf.optimize as optimize
    from gram_tf.convert.recipe import prepare_model

    def broken(*a, **k):
        raise ValueError("unknown layer layout\nsecond line")

    monkeypatch.setattr(optimize, "equalize", broken)
    rep = np.zeros((4, 16, 16, 3), np.uint8)
    with pytest.raises(GramTFError) as err:
        prepare_model(_mobile_block(), Int8Recipe(True, "never"), rep, IDENTITY_PRE, per_channel=False)
    assert "\n" not in str(err.value) and "--equalize never" in str(err.value)


def test_cli_convert_takes_the_recipe_flags_and_shows_the_recipe(tiny_run, tmp_path):
    from click.testing import CliRunner

    from gram_tf.cli import main

    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["convert", str(tiny_run), "--variants", "int8", "--out", str(out),
                                       "--bias-correction", "quantized", "--calibration", "mse",
                                       "--set", "convert.check_samples=4"])
    assert result.exit_code == 0, result.output
    assert "int8_recipe" in result.output and "bc+mse" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"][0]["int8_recipe"]["applied"]["bias_correction"]["inputs"] == "quantized"
    bad = CliRunner().invoke(main, ["convert", str(tiny_run), "--calibration", "kl"])
    assert bad.exit_code == 2 and "kl" in bad.output
