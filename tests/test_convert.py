"""Every conversion variant: loads in ai_edge_litert, has the expected tensor types, agrees with Keras, and
loads in the phone-side clients."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from gram_tf.convert import stage as convert_mod
from gram_tf.config import ConvertConfig, PruneConfig
from gram_tf.convert import VARIANTS, convert_model, convert_run, tflite_weight_stats
from gram_tf.errors import GramTFError

CFG = ConvertConfig(representative_samples=24, check_samples=24, qat_epochs=1)


@pytest.fixture(scope="module")
def converted(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("tfl")
    variants = ["fp32", "fp16", "dynamic", "int16x8", "int8", "int8-per-tensor", "qat-int8"]
    manifest = convert_run(tiny_run, variants, out_dir=out, cfg=CFG, progress=False)
    return out, {a["variant"]: a for a in manifest["artifacts"]}


def _interp(path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    return it


def test_each_variant_loads_with_expected_types(converted):
    out, arts = converted
    expect_io = {"fp32": "float32", "fp16": "float32", "dynamic": "float32", "int16x8": "float32",
                 "int8": "uint8", "int8-per-tensor": "uint8", "qat-int8": "uint8"}
    for variant, art in arts.items():
        it = _interp(art["path"])
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        assert np.dtype(inp["dtype"]).name == expect_io[variant], variant
        assert np.dtype(out["dtype"]).name == expect_io[variant], variant
        assert inp["shape"].tolist() == [1, 64, 64, 3]  # static batch 1
        assert art["io_type"] == expect_io[variant]
        if expect_io[variant] == "uint8":  # pixel input: exactly the pixel values, as MediaPipe feeds them
            assert art["io"]["input"]["scale"] == [1.0] and art["io"]["input"]["zero_point"] == [0], variant
        assert art["preprocessing"]["in_graph"] is True
    assert arts["fp32"]["weight_dtypes"] == ["float32"] and arts["fp32"]["weight_quantization"] == "none"
    assert "float16" in arts["fp16"]["weight_dtypes"] or arts["fp16"]["size_bytes"] < 0.6 * arts["fp32"]["size_bytes"]
    for v in ("int8", "int8-per-tensor", "qat-int8", "int16x8"):
        assert arts[v]["weight_dtypes"] == ["int8"], v
    assert "int8" in arts["dynamic"]["weight_dtypes"]  # tensors under 1024 values stay float
    assert arts["int8"]["weight_quantization"] == "per-channel"
    assert arts["int8-per-tensor"]["weight_quantization"] == "per-tensor"
    assert arts["int8"]["size_bytes"] < 0.4 * arts["fp32"]["size_bytes"]
    # int16x8 keeps int16 activations inside the graph
    it = _interp(arts["int16x8"]["path"])
    assert any(np.dtype(d["dtype"]) == np.int16 for d in it.get_tensor_details())


def test_per_channel_scales_read_from_the_tensor_details(converted):
    _, arts = converted
    for variant, many in (("int8", True), ("int8-per-tensor", False)):
        it = _interp(arts[variant]["path"])
        conv_weights = [d for d in it.get_tensor_details()
                        if np.dtype(d["dtype"]) == np.int8 and len(d["shape"]) == 4 and d["shape"][0] > 1]
        assert conv_weights
        n_scales = {len(d["quantization_parameters"]["scales"]) for d in conv_weights}
        assert (max(n_scales) > 1) == many, (variant, n_scales)


def test_variants_agree_with_keras(converted):
    _, arts = converted
    # integer activation noise may flip a few low-margin calls; float variants agree almost exactly
    minimum = {"fp32": 1.0, "fp16": 0.9, "dynamic": 0.8, "int16x8": 0.75, "int8": 0.75}
    for variant, floor in minimum.items():
        check = arts[variant]["check"]
        assert check["n"] == 24
        assert check["top1_agreement"] >= floor, (variant, check)
    # QAT is compared with the QAT model it converts; TF-MOT re-quantizes the BN-folded weights at
    # conversion, so a barely-trained, low-confidence model drifts more (the manifest flags it)
    assert arts["qat-int8"]["check"]["top1_agreement"] > 0.55
    assert arts["fp32"]["check"]["max_abs_diff"] < 1e-4 and arts["fp32"]["flagged"] is False
    assert isinstance(arts["int8-per-tensor"]["flagged"], bool)


def test_manifest_records_sizes_hashes_and_metadata(converted, tiny_run):
    from gram_tf.io_utils import sha256_file
    from gram_tf.deploy.metadata import read_metadata

    out, arts = converted
    manifest = json.loads((out / "manifest.json").read_text())
    assert {a["variant"] for a in manifest["artifacts"]} == set(arts)
    art = arts["int8"]
    assert art["sha256"] == sha256_file(art["path"]) and art["file"] == "mobilenet_v1_050__int8.tflite"
    assert art["zip_bytes"] < art["size_bytes"] and art["gzip_bytes"] > 0
    assert art["representative_samples"] == 24 and art["io"]["input"]["scale"]
    ks = art["keras_sizes"]
    assert ks["with_optimizer"]["size_bytes"] > ks["without_optimizer"]["size_bytes"]
    assert "tensorflow" in art["versions"] and art["labels"] == ["gram_negative", "gram_positive"]
    meta = read_metadata(art["path"])
    assert meta["labels"] == art["labels"] and meta["input_size"] == 64 and meta["variant"] == "int8"
    assert arts["qat-int8"]["qat_float_layers"] is not None
    # one temperature per run, fitted on the validation split, in every artifact's metadata and entry
    fit = art["temperature_fit"]
    assert fit["split"] == "val" and fit["n"] > 0 and fit["nll_after"] <= fit["nll_before"] + 1e-12
    assert {read_metadata(a["path"])["temperature"] for a in arts.values()} == {art["temperature"]}
    assert isinstance(art["temperature"], float) and art["temperature"] > 0


@pytest.fixture(scope="module")
def pruned_converted(pruned_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pruned_tfl")
    m = convert_run(pruned_run[0], ["fp32", "int8", "pqat-int8"], out_dir=out, cfg=CFG, progress=False)
    return out, {a["variant"]: a for a in m["artifacts"]}


def test_pruned_model_keeps_sparsity_through_conversion(pruned_run, pruned_converted):
    _, res = pruned_run
    tmp_path, arts = pruned_converted
    assert arts["fp32"]["file"] == "mobilenet_v1_050__pruned60-fp32.tflite"
    for v in ("fp32", "pqat-int8"):
        assert arts[v]["sparsity"] == pytest.approx(res["sparsity"], abs=0.03), v
    # a pruned model's int8 recipe also zeroes the channels it never reads: at least as sparse
    assert arts["int8"]["sparsity"] >= res["sparsity"] - 0.03
    dense = tflite_weight_stats(tmp_path / "mobilenet_v1_050__pruned60-fp32.tflite")
    assert dense["sparsity"] > 0.3


def test_errors_are_one_line_and_leave_no_partial_file(tiny_run, tmp_path, monkeypatch):
    from gram_tf.optimize import quantize_aware
    from gram_tf.models import load_model

    with pytest.raises(GramTFError, match="unknown variant 'int4'"):
        convert_run(tiny_run, ["int4"], out_dir=tmp_path)
    with pytest.raises(GramTFError, match="pqat-int8 needs a pruned run"):
        convert_run(tiny_run, ["pqat-int8"], out_dir=tmp_path)
    model = load_model(tiny_run / "model.keras")
    with pytest.raises(GramTFError, match="needs a representative dataset"):
        convert_model(model, "int8", 64, {"channel_order": "RGB", "mean": [0] * 3, "std": [1] * 3}, None)

    def broken(*a, **k):
        raise GramTFError("TFLite conversion to fp32 failed: simulated")

    monkeypatch.setattr(convert_mod, "convert_variant", broken)
    with pytest.raises(GramTFError, match="simulated"):
        convert_run(tiny_run, ["fp32"], out_dir=tmp_path / "x", cfg=CFG, progress=False)
    assert not list((tmp_path / "x").glob("*.tflite*"))


def test_layer_tfmot_cannot_quantize_is_a_clear_error():
    import tf_keras

    inp = tf_keras.Input((8,))
    out = tf_keras.layers.LayerNormalization(name="ln_only")(inp)
    model = tf_keras.Model(inp, out, name="no_qat_layers")
    with pytest.raises(GramTFError, match="no layer of no_qat_layers is supported"):
        quantize_aware_model = __import__("gram_tf.optimize.qat", fromlist=["x"]).quantize_aware
        quantize_aware_model(model)


def test_variant_table_is_complete():
    assert set(VARIANTS) == {"fp32", "fp16", "dynamic", "int16x8", "int8", "int8-per-tensor", "qat-int8", "pqat-int8",
                             "int8-selective", "int8-fast"}


def test_int8_fast_in_convert_run_records_why_and_accuracy(tiny_run, tmp_path):
    # a loose budget keeps this test on the candidates; the accuracy guard is tested in test_profile
    cfg = ConvertConfig(representative_samples=16, check_samples=16, fast_threads=1, fast_max_drop_pp=100.0)
    [art] = convert_run(tiny_run, ["int8-fast"], out_dir=tmp_path, cfg=cfg, progress=False)["artifacts"]
    fast = art["fast"]
    assert "fp32" in fast["whole_model_ms"] and fast["chosen"] in fast["whole_model_ms"]
    assert fast["chosen"] in fast["candidates"] and "full-int8" in fast["candidates"]
    assert all(v > 0 for v in fast["whole_model_ms"].values())
    assert 0 <= fast["val_accuracy"] <= 1 and 0 <= fast["float_val_accuracy"] <= 1 and fast["n_val"] > 0
    assert fast["within_max_drop"] is True and fast["max_drop"] == 1.0
    assert fast["val_accuracy"] == fast["candidates"][fast["chosen"]]["val_accuracy"]
    assert all(f["reason"] in ("not delegated in int8", "slower in int8") for f in fast["float_nodes"])
    assert fast["partitions"] <= fast["int8_partitions"]
    assert art["top1_agreement"] >= 0.8


def test_selective_int8_keeps_the_worst_layers_in_float(tiny_run):
    """The debugger ranks layers by error; denylisted nodes come back float in the .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    from gram_tf import data as data_mod
    from gram_tf.convert import representative_images
    from gram_tf.convert import selective_int8
    from gram_tf.models import load_model
    from gram_tf.run import load_run

    run = load_run(tiny_run)
    rows = data_mod.read_manifest(run["manifest"])
    rep = representative_images(rows, run, 16, 0)
    vx, vy, _ = data_mod.load_split(rows, "val", 64, progress=False)
    model = load_model(tiny_run / "model.keras")
    # max_drop < 0 can never be met, so the search runs its steps (1 then 2 float nodes)
    blob, report = selective_int8(model, 64, run["preprocessing"], rep, vx, vy, run["labels"],
                                  max_drop=-1.0, max_nodes=2)
    assert [s["float_nodes"] for s in report["steps"]] == [0, 1, 2]
    assert report["worst_layers"][0]["rmse_over_scale"] >= report["worst_layers"][-1]["rmse_over_scale"]
    assert 0 <= report["final_accuracy"] <= 1 and len(report["float_nodes"]) <= 2
    if not report["float_nodes"]:
        # no step beat full int8 (data-dependent on a tiny model): full int8 is kept, and said so;
        # the denylist mechanism is then checked on the worst layer directly
        assert all(st["accuracy"] <= report["int8_accuracy"] for st in report["steps"][1:])
        assert report["final_accuracy"] == report["int8_accuracy"]
        from gram_tf.convert import CalibratedInt8, representative_gen

        report["float_nodes"] = [report["worst_layers"][0]["tensor"]]
        blob = CalibratedInt8(model, 64, representative_gen(rep, run["preprocessing"])).quantize(report["float_nodes"])
    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    names = {d["name"]: np.dtype(d["dtype"]) for d in it.get_tensor_details()}
    assert any(n in names and names[n] == np.float32 for n in report["float_nodes"])
    assert any(dt == np.int8 for dt in names.values())


def test_int16x8_that_litert_cannot_prepare_is_a_one_line_error():
    """LiteRT aborts the whole process while preparing an int16x8 model with Keras'
    LayerNormalization (every transformer here); gram_tf prepares it in a child process first and
    turns that into an error naming the variant and what to use instead."""
    import tf_keras

    from gram_tf.convert import convert_model
    from gram_tf.deploy import prepare_failure
    from gram_tf.errors import GramTFError

    inp = tf_keras.Input((8, 8, 3), batch_size=1)
    x = tf_keras.layers.Conv2D(8, 1)(inp)
    x = tf_keras.layers.LayerNormalization()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(2, activation="softmax")(x))
    pre = {"resize": "squash", "channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}
    rep = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), np.uint8)
    with pytest.raises(GramTFError, match="int16x8: LiteRT aborted while preparing it.*use int8"):
        convert_model(model, "int16x8", 8, pre, rep)
    assert prepare_failure(convert_model(model, "int8", 8, pre, rep)) is None


# ---- phone-side clients, each in its own environment (tests/clients) ---------------------------------
def _client(name, script, request):
    from tests.clients.venvs import ClientUnavailable, run_client

    try:
        return run_client(name, script, request)
    except ClientUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{name} client unavailable in CI: {exc}")
        pytest.skip(f"{name} client unavailable here: {exc}")


def _phone_artifacts(converted, pruned_converted):
    arts = {v: converted[1][v] for v in ("fp32", "int8", "int8-per-tensor")}
    arts["pruned int8"] = pruned_converted[1]["int8"]
    return arts


@pytest.fixture(scope="module")
def input_size_pngs(tiny_run, tmp_path_factory):
    """The run's test images already at the model's input size (PNG: lossless), as both sides get them."""
    from PIL import Image
    from gram_tf import data as data_mod
    from gram_tf.run import load_run

    run = load_run(tiny_run)
    rows = data_mod.split_rows(data_mod.read_manifest(run["manifest"]), "test")
    x, _, _, _ = data_mod.load_images(rows, run["input_size"], "squash", progress=False, labels=run["labels"])
    out = tmp_path_factory.mktemp("pngs")
    paths = []
    for i, image in enumerate(x):
        paths.append(str(out / f"test_{i:03d}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths


def test_mediapipe_image_classifier_gives_the_labels_and_scores_of_predict(converted, pruned_converted,
                                                                          input_size_pngs):
    from gram_tf.deploy import Classifier

    arts = _phone_artifacts(converted, pruned_converted)
    answer = _client("mediapipe", "mediapipe_classify.py",
                     {"models": [a["path"] for a in arts.values()], "images": input_size_pngs})
    for variant, art in arts.items():
        got = answer[art["path"]]
        assert "error" not in got, (variant, got)
        # MediaPipe shows the model's own scores: the run's temperature is gram_tf metadata it does not read
        ours, errors = Classifier(art["path"], temperature=False).predict_paths(input_size_pngs)
        assert not errors and len(ours) == len(input_size_pngs) >= 20
        for row in ours:
            theirs = got["scores"][row["path"]]
            assert set(theirs) == set(row["probs"]), variant  # labels from the packed labels.txt
            assert max(theirs, key=theirs.get) == row["label"], (variant, row, theirs)
            assert max(abs(theirs[k] - row["probs"][k]) for k in theirs) <= 0.01, (variant, row, theirs)


def test_task_library_metadata_reader_reads_every_artifact(converted, pruned_converted):
    arts = _phone_artifacts(converted, pruned_converted)
    answer = _client("tflite_support", "tflite_support_read.py", {"models": [a["path"] for a in arts.values()]})
    for variant, art in arts.items():
        got = answer[art["path"]]
        assert "error" not in got, (variant, got)
        assert got["packed"] == ["labels.txt"] and got["labels"].splitlines() == art["labels"], variant
        sub = got["json"]["subgraph_metadata"][0]
        [inp], [out] = sub["input_tensor_metadata"], sub["output_tensor_metadata"]
        assert inp["content"]["content_properties_type"] == "ImageProperties"
        assert inp["content"]["content_properties"]["color_space"] == "RGB"
        # pixel input: identity normalization on 0-255, whatever the model's own mean/std
        assert inp["process_units"][0]["options"] == {"mean": [0.0], "std": [1.0]}, variant
        assert inp["stats"] == {"max": [255.0], "min": [0.0]}
        assert out["content"]["content_properties_type"] == "FeatureProperties"
        assert out["associated_files"] == [{"name": "labels.txt", "type": "TENSOR_AXIS_LABELS",
                                            "description": "Labels of the classes, one per line."}]
        assert got["json"]["min_parser_version"] == "1.0.0"
        assert got["json"]["name"].startswith("Gram stain classifier (mobilenet_v1_050")


def test_old_format_artifacts_predict_as_they_did(tmp_path):
    """Artifacts from before pixel input (normalized int8 input, gram_tf JSON only) classify exactly as
    the code of their day did (probabilities recorded by it with the same images)."""
    from gram_tf.deploy import Classifier

    fixtures = Path(__file__).parent / "fixtures" / "old_format"
    images = np.load(fixtures / "old_format_images.npy")
    recorded = json.loads((fixtures / "old_format_probs.json").read_text())
    for variant, probs in recorded.items():
        clf = Classifier(fixtures / f"old_format_{variant}.tflite")
        assert clf.input_details[0]["dtype"] == (np.int8 if variant == "int8" else np.float32)
        np.testing.assert_allclose(clf.predict_arrays(images), np.asarray(probs), atol=1e-6)


def test_labels_that_cannot_go_into_labels_txt_are_refused():
    from gram_tf.deploy.classifier import check_labels

    assert check_labels(["gram_negative", "Gram positive ü"], "r") == ["gram_negative", "Gram positive ü"]
    for bad in (["pos\nitive", "neg"], ["", "neg"], [" ", "neg"], [None, "neg"], ["tab\there", "x"],
                ["zero\u200bwidth", "x"]):
        with pytest.raises(GramTFError, match="is not a name"):
            check_labels(bad, "r")
