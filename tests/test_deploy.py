"""gram_tf.deploy, the TensorFlow-free deployment wing: .tflite metadata (ours and TFLITE_METADATA), the
Classifier and its interpreter, image decoding, resize / normalize; and the gram_tf.runtime face.
(deploy.stream, deploy.timing and deploy.profile have their own files.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gram_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from gram_tf import runtime
from gram_tf.errors import GramTFError
from gram_tf.runtime import Classifier, load_image, normalize, resize_image
from gram_tf.deploy.metadata import (embed_metadata, list_metadata_names, read_metadata,
                                 sidecar_path, write_sidecar)

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
LABELS = ["gram_negative", "gram_positive"]
PREPROC = {"resize": "squash", "channel_order": "BGR",
           "mean": [120.0, 110.0, 100.0], "std": [60.0, 50.0, 40.0]}
META = {"format": "gram_tf/1", "labels": LABELS, "input_size": SIZE, "preprocessing": PREPROC,
        "backbone": "tiny_test", "variant": "fp32"}


def reference_normalize(batch_uint8):
    """Independent re-implementation of the metadata preprocessing (BGR, mean/std)."""
    x = batch_uint8.astype(np.float32)[..., ::-1]
    return (x - np.array(PREPROC["mean"], np.float32)) / np.array(PREPROC["std"], np.float32)


def random_images(n, seed, size=SIZE):
    """Images with a random base colour per image + noise, so model outputs spread out."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, size=(n, 1, 1, 3))
    noise = rng.normal(0, 35, size=(n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    layers = tf_keras.layers
    out_dir = tmp_path_factory.mktemp("models")

    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(8, 3, activation="relu",
                      kernel_initializer=tf_keras.initializers.RandomNormal(0, 0.3))(inp)
    x = layers.GlobalAveragePooling2D()(x)
    logits = layers.Dense(2, kernel_initializer=tf_keras.initializers.RandomNormal(0, 1))(x)
    probs = layers.Softmax()(logits)
    keras_model = tf_keras.Model(inp, probs)
    logits_model = tf_keras.Model(inp, logits)
    # binary sigmoid head with a static batch of 1 (no resize_tensor_input path)
    inp1 = tf_keras.Input((SIZE, SIZE, 3), batch_size=1)
    x1 = layers.GlobalAveragePooling2D()(keras_model.layers[1](inp1))
    sigmoid_model = tf_keras.Model(inp1, layers.Dense(1, activation="sigmoid")(x1))

    def convert(model, int8=False, buffer_offset=False):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            rep = reference_normalize(random_images(64, seed=1))
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([r[None]] for r in rep)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        if buffer_offset:
            conv._experimental_use_buffer_offset = True  # large-model layout, data past the fb
        return conv.convert()

    pool = tf_keras.Sequential([tf_keras.Input((SIZE, SIZE, 3)),
                                layers.AveragePooling2D(6, strides=6)])  # -> [1, 5, 5, 3]
    raw = {"fp32": convert(keras_model), "int8": convert(keras_model, int8=True),
           "offset": convert(keras_model, buffer_offset=True),
           "logits": convert(logits_model), "sigmoid": convert(sigmoid_model),
           "pool": convert(pool)}
    paths = {}
    for name, data in raw.items():
        paths[name] = out_dir / f"{name}.tflite"
        meta = dict(META, variant=name)
        paths[name].write_bytes(embed_metadata(data, meta))
    paths["plain"] = out_dir / "plain.tflite"
    paths["plain"].write_bytes(raw["fp32"])
    return {"keras": keras_model, "sigmoid": sigmoid_model, "raw": raw, "paths": paths}


def keras_probs(models, batch):
    return models["keras"](reference_normalize(batch), training=False).numpy()


# ------------------------------------------------------------------------------- metadata
def test_read_metadata_round_trip(models, tmp_path):
    raw = models["raw"]["fp32"]
    assert read_metadata(raw) is None
    assert "gram_tf" not in list_metadata_names(raw)

    embedded = embed_metadata(raw, META)
    assert read_metadata(embedded) == META
    path = tmp_path / "m.tflite"
    path.write_bytes(embedded)
    assert read_metadata(path) == META
    assert read_metadata(str(path)) == META
    assert read_metadata(path, name="other") is None
    # the converter's own entries are kept
    assert list_metadata_names(embedded)[-1] == "gram_tf"
    assert set(list_metadata_names(raw)) <= set(list_metadata_names(embedded))

    # re-embedding replaces, it does not duplicate
    again = embed_metadata(embedded, dict(META, labels=["a", "b"]))
    assert read_metadata(again)["labels"] == ["a", "b"]
    assert list_metadata_names(again).count("gram_tf") == 1
    # a second, differently named entry lives alongside
    both = embed_metadata(again, {"x": 1}, name="extra")
    assert read_metadata(both)["labels"] == ["a", "b"] and read_metadata(both, "extra") == {"x": 1}


def test_standard_metadata_round_trip_and_packed_labels(models, tmp_path):
    from gram_tf.deploy import (classifier_card, package_model, read_packed_files, read_standard_metadata,
                                split_packed)

    raw = models["raw"]["fp32"]
    assert read_standard_metadata(raw) is None and split_packed(raw) == (raw, {})
    card = classifier_card(name="n", description="d", version="v1", author="lab", license="CC-BY-4.0",
                           input_size=SIZE, mean=[0.0], std=[1.0], value_min=[0.0], value_max=[255.0],
                           input_description="pixels", labels=LABELS)
    packed = package_model(embed_metadata(raw, META), card, LABELS)
    assert read_standard_metadata(packed) == card
    assert read_packed_files(packed) == {"labels.txt": b"gram_negative\ngram_positive\n"}
    assert read_metadata(packed) == META
    # embedding again (either entry) keeps one labels file, still at the end where readers look
    again = package_model(embed_metadata(packed, dict(META, variant="x")), card, ["a", "b"])
    assert read_packed_files(again) == {"labels.txt": b"a\nb\n"} and read_metadata(again)["variant"] == "x"
    assert list_metadata_names(again).count("TFLITE_METADATA") == 1
    assert split_packed(again)[0][-4:] != b"PK\x05\x06"
    # the model still loads and computes the same
    path = tmp_path / "m.tflite"
    path.write_bytes(again)
    batch = random_images(4, seed=3)
    np.testing.assert_allclose(Classifier(path, labels=LABELS, preprocessing=PREPROC).predict_arrays(batch),
                               keras_probs(models, batch), atol=1e-5)
    # bytes that only look like a zip's end are not files
    assert split_packed(raw + b"PK\x05\x06" + bytes(18)) == (raw + b"PK\x05\x06" + bytes(18), {})


def test_read_metadata_rejects_non_tflite(tmp_path):
    bad = tmp_path / "notes.tflite"
    bad.write_text("this is not a model at all")
    with pytest.raises(GramTFError, match="notes.tflite.*TFL3"):
        read_metadata(bad)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(GramTFError, match="empty.tflite"):
        read_metadata(empty)
    with pytest.raises(GramTFError, match="missing.tflite"):
        read_metadata(tmp_path / "missing.tflite")
    with pytest.raises(GramTFError, match="TFL3"):
        embed_metadata(b"\0" * 64, META)
    with pytest.raises(GramTFError, match="JSON"):
        embed_metadata(b"\0" * 64, {"bad": object()})


@pytest.mark.parametrize("variant", ["fp32", "int8", "offset"])
def test_embedded_model_loads_and_computes_the_same(models, variant):
    from ai_edge_litert.interpreter import Interpreter

    raw = models["raw"][variant]
    embedded = embed_metadata(embed_metadata(raw, {"first": 1}), META)  # also a replace
    assert read_metadata(embedded) == META
    assert len(embedded) % 16 == len(raw) % 16  # data alignment kept
    batch = random_images(1, seed=7)
    outs = []
    for content in (raw, embedded):
        interp = Interpreter(model_content=content)  # model_content goes through the verifier
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        x = reference_normalize(batch)
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            x = np.clip(np.rint(x / scale + zero), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_embed_is_tensorflow_compatible(models):
    """TensorFlow's own flatbuffer reader sees the same model plus the new metadata."""
    flatbuffer_utils = pytest.importorskip("tensorflow.lite.tools.flatbuffer_utils")
    raw = models["raw"]["offset"]
    before = flatbuffer_utils.read_model_from_bytearray(bytearray(raw))
    after = flatbuffer_utils.read_model_from_bytearray(bytearray(embed_metadata(raw, META)))
    assert [m.name for m in after.metadata][-1] == b"gram_tf"
    assert len(after.buffers) == len(before.buffers) + 1
    for b0, b1 in zip(before.buffers, after.buffers):
        assert (b0.data is None and b1.data is None) or np.array_equal(b0.data, b1.data)
    t0 = [(t.name, t.buffer, list(t.shape)) for t in before.subgraphs[0].tensors]
    t1 = [(t.name, t.buffer, list(t.shape)) for t in after.subgraphs[0].tensors]
    assert t0 == t1 and len(after.signatureDefs) == len(before.signatureDefs)
    data = bytes(after.buffers[after.metadata[-1].buffer].data)
    assert json.loads(data) == META


def test_sidecar_path():
    assert sidecar_path("models/x.tflite") == Path("models/x.tflite.json")


# ------------------------------------------------------------------------------ classifier
def test_classifier_fp32_matches_keras(models):
    clf = Classifier(models["paths"]["fp32"])
    assert clf.labels == LABELS and clf.input_size == SIZE
    assert clf.preprocessing["channel_order"] == "BGR" and clf.meta["variant"] == "fp32"
    assert clf.warnings == []
    batch = random_images(12, seed=3)
    probs = clf.predict_arrays(batch)
    assert probs.shape == (12, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, keras_probs(models, batch), atol=1e-4)


def test_classifier_int8_close_to_keras(models):
    clf = Classifier(models["paths"]["int8"], threads=1)
    assert clf.input_details[0]["dtype"] == np.int8
    batch = random_images(40, seed=4)
    probs = clf.predict_arrays(batch)
    ref = keras_probs(models, batch)
    assert np.abs(probs - ref).max() < 0.1
    confident = np.abs(ref[:, 0] - ref[:, 1]) > 0.1
    agree = probs.argmax(1) == ref.argmax(1)
    assert agree.mean() >= 0.9 and agree[confident].all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_classifier_softmaxes_logits(models):
    clf = Classifier(models["paths"]["logits"])
    batch = random_images(6, seed=5)
    probs = clf.predict_arrays(batch)
    np.testing.assert_allclose(probs, keras_probs(models, batch), atol=1e-4)
    assert any("softmax" in w for w in clf.warnings)


def test_classifier_binary_sigmoid_static_batch(models):
    clf = Classifier(models["paths"]["sigmoid"])
    assert list(clf.input_details[0]["shape_signature"]) == [1, SIZE, SIZE, 3]
    batch = random_images(5, seed=8)
    probs = clf.predict_arrays(batch)
    p1 = models["sigmoid"](reference_normalize(batch), training=False).numpy()[:, 0]
    np.testing.assert_allclose(probs[:, 1], p1, atol=1e-4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


def test_predict_paths_folder_with_bad_file(models, tmp_path):
    folder = tmp_path / "slides"
    (folder / "sub").mkdir(parents=True)
    batch = random_images(4, seed=6)
    names = ["b.png", "a.png", "sub/c.PNG", "sub/d.bmp"]
    for name, img in zip(names, batch):
        Image.fromarray(img).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    clf = Classifier(models["paths"]["fp32"])
    results, errors = clf.predict_paths([folder], top_k=2)

    assert [Path(r["path"]).name for r in results] == ["a.png", "b.png", "c.PNG", "d.bmp"]
    assert len(errors) == 1 and errors[0]["path"].endswith("broken.jpg")
    assert "broken.jpg" in errors[0]["error"]
    ref = keras_probs(models, batch[[1, 0, 2, 3]])
    for r, p in zip(results, ref):
        assert r["label"] == LABELS[int(p.argmax())]
        assert abs(r["prob"] - p.max()) < 1e-4
        assert [lab for lab, _ in r["top_k"]] == sorted(LABELS, key=lambda lab: -r["probs"][lab])
        assert set(r["probs"]) == set(LABELS)

    table = runtime.format_table(results, top_k=2)
    assert "a.png" in table and "top 2" in table
    csv_text = runtime.to_csv(results, top_k=2)
    assert csv_text.splitlines()[0].startswith("path,label,prob,top2_label,top2_prob")
    assert len(csv_text.splitlines()) == 5
    doc = json.loads(runtime.to_json(results, errors))
    assert len(doc["results"]) == 4 and doc["errors"][0]["path"].endswith("broken.jpg")

    # single file paths are accepted as-is, and resized to the model input
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((90, 120, 3), 200, np.uint8)).save(big)
    results, errors = clf.predict_paths(str(big))
    assert len(results) == 1 and not errors


def test_predict_paths_errors(models, tmp_path):
    clf = Classifier(models["paths"]["fp32"])
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(GramTFError, match="empty_dir.*no images"):
        clf.predict_paths([empty])
    with pytest.raises(GramTFError, match="nowhere"):
        clf.predict_paths([tmp_path / "nowhere"])


def test_missing_metadata_needs_labels(models, tmp_path):
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(models["raw"]["fp32"])
    with pytest.raises(GramTFError, match="plain.tflite.*--labels"):
        Classifier(plain)
    # explicit labels: size comes from the static input shape, default preprocessing + warning
    clf = Classifier(plain, labels="neg,pos")
    assert clf.labels == ["neg", "pos"] and clf.input_size == SIZE
    assert clf.preprocessing["mean"] == [127.5] * 3 and clf.warnings
    # sidecar fallback
    write_sidecar(plain, META)
    clf = Classifier(plain)
    assert clf.labels == LABELS and clf.preprocessing["channel_order"] == "BGR"
    assert clf.meta_source.endswith("plain.tflite.json")
    # explicit arguments override metadata
    clf = Classifier(models["paths"]["fp32"], labels=["x", "y"],
                     preprocessing={"resize": "center_crop"})
    assert clf.labels == ["x", "y"] and clf.preprocessing["resize"] == "center_crop"
    with pytest.raises(GramTFError, match="3 labels"):
        Classifier(models["paths"]["fp32"], labels=["a", "b", "c"])
    with pytest.raises(GramTFError, match="expects 32x32"):
        Classifier(models["paths"]["fp32"], input_size=64)


def test_non_classifier_rejected(models, tmp_path):
    with pytest.raises(GramTFError, match="pool.tflite: not an image classifier"):
        Classifier(models["paths"]["pool"])
    not_model = tmp_path / "fake.tflite"
    not_model.write_text("hello")
    with pytest.raises(GramTFError, match="fake.tflite"):
        Classifier(not_model)
    with pytest.raises(GramTFError, match="not found"):
        Classifier(tmp_path / "absent.tflite")


def test_missing_interpreter_says_what_to_install(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(GramTFError, match="pip install ai-edge-litert"):
        Classifier(models["paths"]["fp32"])


def _with_temperature(models, tmp_path, t) -> Path:
    path = tmp_path / "calibrated.tflite"
    path.write_bytes(embed_metadata(models["raw"]["fp32"], dict(META, temperature=t)))
    return path


def _slide_folder(tmp_path, n=8) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    for i, img in enumerate(random_images(n, seed=11)):
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    return folder


def test_temperature_from_the_metadata_is_applied_and_can_be_turned_off(models, tmp_path):
    from gram_tf.metrics import apply_temperature

    path = _with_temperature(models, tmp_path, 2.5)
    batch = random_images(16, seed=10)
    own = Classifier(models["paths"]["fp32"]).predict_arrays(batch)  # exported without a temperature
    assert Classifier(models["paths"]["fp32"]).temperature is None
    on = Classifier(path)
    assert on.recorded_temperature == on.temperature == 2.5
    scaled = on.predict_arrays(batch)
    np.testing.assert_allclose(scaled, apply_temperature(own, 2.5), atol=1e-5)
    assert (scaled.argmax(1) == own.argmax(1)).all() and scaled.max(1).max() < own.max(1).max()
    off = Classifier(path, temperature=False)
    assert off.temperature is None and off.recorded_temperature == 2.5
    np.testing.assert_allclose(off.predict_arrays(batch), own, atol=1e-6)
    for bad in ("hot", 0, -1.0, True):
        with pytest.raises(GramTFError, match="temperature"):
            Classifier(_with_temperature(models, tmp_path, bad))


def test_predict_cli_applies_the_temperature_unless_told_not_to(models, tmp_path):
    from click.testing import CliRunner

    from gram_tf.cli import main

    folder = _slide_folder(tmp_path)
    path = _with_temperature(models, tmp_path, 3.0)

    def probs(*opts):
        res = CliRunner().invoke(main, ["predict", str(path), str(folder), "--json", *opts])
        assert res.exit_code == 0, res.output
        return {Path(r["path"]).name: r["prob"] for r in json.loads(res.stdout)["results"]}

    own = {Path(r["path"]).name: r["prob"] for r in Classifier(models["paths"]["fp32"]).predict_paths([folder])[0]}
    scaled, unscaled = probs(), probs("--no-temperature")
    assert unscaled == pytest.approx(own, abs=1e-6)
    sure = [k for k in own if own[k] > 0.51]
    assert sure and all(scaled[k] < own[k] - 1e-4 for k in sure)  # softer scores, same files


def test_min_confidence_refers_rows_in_every_output_format(models, tmp_path):
    from click.testing import CliRunner

    from gram_tf.cli import main
    from gram_tf.metrics import REFER

    folder = _slide_folder(tmp_path)
    model = str(models["paths"]["fp32"])
    results, _ = Classifier(model).predict_paths([folder])
    scores = sorted(r["prob"] for r in results)
    cut = (scores[3] + scores[4]) / 2  # four images below it
    low = {Path(r["path"]).name for r in results if r["prob"] < cut}
    assert len(low) == 4

    rows, _ = Classifier(model, min_confidence=cut).predict_paths([folder], top_k=2)
    for r in rows:
        name = Path(r["path"]).name
        assert r["referred"] == (name in low)
        assert (r["label"] == REFER) == (name in low)
        assert r["top_k"][0][0] in LABELS  # the model's guess stays in the row
    runner = CliRunner()
    opts = ["predict", model, str(folder), "--min-confidence", f"{cut:.6f}"]
    table = runner.invoke(main, opts)
    assert table.exit_code == 0, table.output
    lines = [ln for ln in table.stdout.splitlines() if ".png" in ln]
    assert sorted(Path(ln.split()[0]).name for ln in lines if REFER in ln) == sorted(low)
    assert "4 referred to a human" in table.stderr
    as_csv = runner.invoke(main, [*opts, "--csv"]).stdout.splitlines()[1:]
    assert sorted(Path(ln.split(",")[0]).name for ln in as_csv if f",{REFER}," in ln) == sorted(low)
    doc = json.loads(runner.invoke(main, [*opts, "--json"]).stdout)
    assert sorted(Path(r["path"]).name for r in doc["results"] if r["label"] == REFER and r["referred"]) == sorted(low)
    out = tmp_path / "rows.jsonl"
    assert runner.invoke(main, [*opts, "--out", str(out)]).exit_code == 0
    streamed = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in streamed if r["label"] == REFER) == sorted(low)
    out_csv = tmp_path / "rows.csv"
    assert runner.invoke(main, [*opts, "--out", str(out_csv)]).exit_code == 0
    assert sum(f",{REFER}," in ln for ln in out_csv.read_text().splitlines()) == 4
    bad = runner.invoke(main, [*opts[:3], "--min-confidence", "1.5"])
    assert bad.exit_code == 2 and "--min-confidence" in bad.output


def test_runtime_imports_no_tensorflow(models, tmp_path):
    blocker = tmp_path / "blocker"
    for pkg in ("tensorflow", "tf_keras", "keras"):
        (blocker / pkg).mkdir(parents=True)
        (blocker / pkg / "__init__.py").write_text(
            f"raise ImportError('{pkg} is blocked: the runtime must not import it')\n")
    img = tmp_path / "cell.png"
    batch = random_images(1, seed=9)
    Image.fromarray(batch[0]).save(img)
    expected = LABELS[int(keras_probs(models, batch)[0].argmax())]
    script = textwrap.dedent(f"""
        import sys
        import gram_tf.runtime as rt
        import gram_tf.deploy.profile, gram_tf.deploy.timing  # the whole deploy wing
        from gram_tf.deploy import build_metadata, classifier_card, package_model
        from gram_tf.deploy.inspect import describe
        clf = rt.Classifier({str(models["paths"]["fp32"])!r})
        card = classifier_card(name="n", description="d", version="1", input_size=4, mean=[0], std=[1],
                               value_min=[0], value_max=[255], input_description="i", labels=["a", "b"])
        assert describe({str(models["paths"]["fp32"])!r})["labels"] == ["gram_negative", "gram_positive"]
        assert package_model(open({str(models["paths"]["fp32"])!r}, "rb").read(), card, ["a", "b"])
        results, errors = clf.predict_paths([{str(img)!r}])
        assert not errors, errors
        heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')]
        assert not heavy, heavy
        print('LABEL', results[0]['label'])
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"LABEL {expected}" in proc.stdout


# ----------------------------------------------------------------------------------- images
def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_load_image_rgba_and_la_on_white(tmp_path):
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (255, 0, 0, 128)])
    out = load_image(_save(rgba, tmp_path / "rgba.png"))
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [255, 0, 0]
    assert out[0, 2].tolist() == [255, 127, 127]
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (10, 255)])
    out = load_image(_save(la, tmp_path / "la.png"))
    assert out[0, 0].tolist() == [255] * 3 and out[0, 1].tolist() == [10] * 3


def test_load_image_grey_bilevel_and_palette(tmp_path):
    grey = Image.new("L", (2, 2), 77)
    assert load_image(_save(grey, tmp_path / "l.png")).tolist() == [[[77] * 3] * 2] * 2
    bilevel = Image.new("1", (2, 1))
    bilevel.putdata([0, 255])
    out = load_image(_save(bilevel, tmp_path / "one.png"))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
    pal = Image.new("RGB", (2, 1))
    pal.putdata([(10, 20, 30), (200, 100, 50)])
    p = pal.quantize(colors=2)
    out = load_image(_save(p, tmp_path / "p.png"))
    assert sorted(map(tuple, out[0].tolist())) == [(10, 20, 30), (200, 100, 50)]
    # palette with a transparent index -> white
    index_of_first = p.getpixel((0, 0))
    p.info["transparency"] = index_of_first
    out = load_image(_save(p, tmp_path / "pt.png", transparency=index_of_first))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [200, 100, 50]
    gif = load_image(_save(p, tmp_path / "pt.gif", transparency=index_of_first))
    assert gif[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_load_image_16bit(tmp_path, fmt):
    arr = np.array([[0, 65535], [257, 32896]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    out = load_image(_save(img, tmp_path / f"deep.{fmt}"))
    assert out.shape == (2, 2, 3)
    assert out[..., 0].tolist() == [[0, 255], [1, 128]]


def test_load_image_int32_and_float_modes(tmp_path):
    i32 = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    assert load_image(_save(i32, tmp_path / "i.tiff"))[0, :, 0].tolist() == [0, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert load_image(_save(f, tmp_path / "f.tiff"))[0, :, 0].tolist() == [0, 128, 255]


def test_load_image_cmyk(tmp_path):
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    out = load_image(_save(cmyk, tmp_path / "cmyk.tiff"))
    assert out[0, 0].tolist() == [255, 0, 0]
    out = load_image(_save(cmyk, tmp_path / "cmyk.jpg", quality=95))
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 60


def test_load_image_exif_orientation(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide x 20 high
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = _save(Image.fromarray(stored), tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)  # decoded 20 wide x 40 high
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60  # left half is now on top
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


def test_load_image_multiframe_tiff_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((0, 255, 0), (255, 0, 0), (0, 0, 255))]
    path = _save(frames[0], tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with Image.open(path) as img:
        assert img.n_frames == 3
    assert load_image(path)[0, 0].tolist() == [0, 255, 0]


def test_load_image_large_jpeg(tmp_path):
    big = Image.new("RGB", (4000, 3000), (30, 60, 90))
    out = load_image(_save(big, tmp_path / "big.jpg", quality=80))
    assert out.shape == (3000, 4000, 3)
    assert resize_image(out, 224, "center_crop").shape == (224, 224, 3)


def test_load_image_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(GramTFError, match="empty.jpg.*empty"):
        load_image(empty)
    good = tmp_path / "whole.jpg"
    Image.fromarray(random_images(1, 0, size=256)[0]).save(good, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(GramTFError, match="cut.jpg"):
        load_image(cut)
    png = tmp_path / "whole.png"
    Image.fromarray(random_images(1, 0, size=64)[0]).save(png)
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    with pytest.raises(GramTFError, match="cut.png"):
        load_image(cut_png)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(GramTFError, match="notes.png.*not a recognised image"):
        load_image(text)
    with pytest.raises(GramTFError, match="ghost.png"):
        load_image(tmp_path / "ghost.png")
    # special files: a FIFO named like an image must not block the open, a device must not be read
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(GramTFError, match="pipe.png: not a regular file"):
        load_image(fifo)
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(GramTFError, match="zero.png: not a regular file"):
        load_image(tmp_path / "zero.png")


# --------------------------------------------------------------------- resize / normalize
def test_resize_modes():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, :100] = (0, 0, 255)
    img[:, 100:200] = (255, 0, 0)
    img[:, 200:] = (0, 255, 0)
    crop = resize_image(img, 50, "center_crop")
    assert crop.shape == (50, 50, 3) and crop.dtype == np.uint8
    # only the red centre square survives (bilinear blends the outermost column)
    assert (crop[:, 1:-1] == (255, 0, 0)).all() and crop[:, [0, -1], 0].min() > 120
    squash = resize_image(img, 30, "squash")
    assert squash.shape == (30, 30, 3)
    assert squash[15, 2].tolist() == [0, 0, 255] and squash[15, 27].tolist() == [0, 255, 0]
    tall = np.zeros((300, 100, 3), np.uint8)
    tall[100:200] = 255
    assert (resize_image(tall, 20, "center_crop")[1:-1] == 255).all()
    assert resize_image(np.zeros((3000, 4000, 3), np.uint8), 224, "center_crop").shape == (
        224, 224, 3)
    same = resize_image(crop, 50, "squash")
    np.testing.assert_array_equal(same, crop)
    with pytest.raises(GramTFError, match="resize mode"):
        resize_image(img, 50, "letterbox")


def test_normalize_channel_order_and_stats():
    batch = np.zeros((2, 1, 1, 3), np.uint8)
    batch[..., 0], batch[..., 1], batch[..., 2] = 10, 20, 30
    out = normalize(batch, {"resize": "squash", "channel_order": "BGR",
                            "mean": [1, 2, 3], "std": [2, 2, 3]})
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [(30 - 1) / 2, (20 - 2) / 2, (10 - 3) / 3])
    rgb = normalize(batch, dict(runtime.DEFAULT_PREPROCESSING))
    np.testing.assert_allclose(rgb[0, 0, 0], (np.array([10, 20, 30]) - 127.5) / 127.5)
    with pytest.raises(GramTFError, match="channel_order"):
        normalize(batch, dict(runtime.DEFAULT_PREPROCESSING, channel_order="RBG"))
    # a pixel-input model's graph does both: the caller hands over the pixels as they are
    from gram_tf.deploy import outside_graph, pixel_input

    bgr = {"resize": "squash", "channel_order": "BGR", "mean": [1, 2, 3], "std": [2, 2, 3]}
    np.testing.assert_array_equal(normalize(batch, pixel_input(bgr))[0, 0, 0], [10, 20, 30])
    assert outside_graph(pixel_input(bgr)) == bgr
    with pytest.raises(GramTFError, match="in_graph must be true or false"):
        normalize(batch, dict(bgr, in_graph="yes"))


def test_image_extensions():
    assert runtime.is_image_file("A.JPG") and runtime.is_image_file("x.tiff")
    assert not runtime.is_image_file("x.txt")
