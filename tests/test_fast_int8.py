"""gram_tf.convert.fast_int8 and the calibrated converter it builds on."""
import numpy as np
import pytest

from gram_tf.convert import choose_float_nodes, fast_int8
from gram_tf.deploy.profile import delegation, output_names

from .conftest import MNV3_SIZE as SIZE, synthetic_images


def test_calibrated_int8_requantizes_without_recalibrating(mnv3):
    """One calibration serves every denylist; a denylisted node comes back float, and the same
    denylist gives the same bytes as a fresh calibration."""
    from gram_tf.convert import CalibratedInt8, representative_gen

    gen = representative_gen(mnv3["rep"], mnv3["pre"])
    int8 = CalibratedInt8(mnv3["model"], SIZE, gen)
    node = next(n for n in output_names(int8.quantize()) if "conv" in n.lower())
    mixed = int8.quantize([node])
    assert int8.quantize([node]) is mixed  # cached
    assert mixed == CalibratedInt8(mnv3["model"], SIZE, gen).quantize([node])
    from ai_edge_litert.interpreter import Interpreter

    def dtypes(blob):
        return {t["name"]: np.dtype(t["dtype"]) for t in Interpreter(model_content=blob).get_tensor_details()}

    assert dtypes(int8.quantize())[node] == np.int8 and dtypes(mixed)[node] == np.float32


def test_choose_float_nodes_rules():
    fp32 = {"a": ("CONV_2D", 1.0, True), "b": ("CONV_2D", 1.0, True), "c": ("ADD", 0.1, True)}
    int8 = {"a": ("CONV_2D", 1.5, True),          # slower by 50%: float
            "b": ("CONV_2D", 1.02, True),         # within margin: int8
            "c": ("ADD", 0.05, False),            # falls out of the delegate: float
            "q": ("QUANTIZE", 9.0, True)}         # conversion ops are never denylisted
    chosen = {c["node"]: c["reason"] for c in choose_float_nodes(int8, fp32, margin=0.05, min_gain_ms=0.01)}
    assert chosen == {"a": "slower in int8", "c": "not delegated in int8"}


def test_int8_fast_removes_fallbacks_and_keeps_predictions(mnv3):
    x_val, y_val = synthetic_images(8, seed=6), np.arange(8) % 2
    blob, report = fast_int8(mnv3["model"], SIZE, mnv3["pre"], mnv3["rep"], threads=1, runs=3,
                             validation=(x_val, y_val), max_drop=1.0)  # every candidate accurate enough
    cands = report["candidates"]
    assert "guard" not in report and report["within_max_drop"] is True
    assert {"full-int8", "delegate-only"} <= set(cands)
    # keeping the hard-swishes float puts the graph back into (almost) one XNNPACK partition
    assert cands["delegate-only"]["partitions"] <= 2 < report["int8_partitions"] == cands["full-int8"]["partitions"]
    assert cands["delegate-only"]["float_nodes"] >= report["int8_fallback_ops"]["HARD_SWISH"]
    # the fastest whole graph is kept, and the report says what it keeps in float and why
    assert report["chosen"] == min(cands, key=lambda k: cands[k]["whole_model_ms"])
    assert delegation(blob)["partitions"] == cands[report["chosen"]]["partitions"]
    if report["chosen"] != "full-int8":
        assert ("HARD_SWISH", "not delegated in int8") in {(f["op"], f["reason"]) for f in report["float_nodes"]}
    # the mixed model still computes the same function as the float one
    from gram_tf.runtime import Classifier
    import tempfile, os

    fd, path = tempfile.mkstemp(suffix=".tflite")
    os.close(fd)
    open(path, "wb").write(blob)
    x = synthetic_images(16, seed=3)
    probs = Classifier(path, labels=["a", "b"], input_size=SIZE, preprocessing=mnv3["pre"]).predict_arrays(x)
    from gram_tf.data import make_dataset

    ref = mnv3["model"].predict(make_dataset(x, None, mnv3["pre"], 16), verbose=0)
    assert np.abs(probs - ref).max() < 0.15
    os.unlink(path)


def test_int8_fast_accuracy_guard_adds_high_error_nodes(mnv3):
    """With validation data only accurate candidates compete; when none is, the debugger's worst
    tensors are kept float on top of the fastest candidate (max_drop < 0 forces the search)."""
    x, y = synthetic_images(12, seed=5), np.arange(12) % 2
    blob, report = fast_int8(mnv3["model"], SIZE, mnv3["pre"], mnv3["rep"], threads=1, runs=3,
                             validation=(x, y), max_drop=-1.0, max_guard_nodes=2)
    guard = report["guard"]
    assert guard["from"] in ("full-int8", "delegate-only", "profile-guided")
    assert [s["float_nodes"] for s in guard["steps"]] == [1, 2]
    assert guard["worst_layers"][0]["rmse_over_scale"] >= guard["worst_layers"][-1]["rmse_over_scale"]
    cands = report["candidates"]
    assert "accuracy-guarded" in cands and all("val_accuracy" in c for c in cands.values())
    # nothing can be within a negative budget: the most accurate candidate is kept, and said so
    assert report["within_max_drop"] is False
    assert report["val_accuracy"] == max(c["val_accuracy"] for c in cands.values())
    from gram_tf.data import make_dataset

    keras_probs = mnv3["model"].predict(make_dataset(x, None, mnv3["pre"], 16), verbose=0)
    assert report["float_val_accuracy"] == pytest.approx(float(np.mean(keras_probs.argmax(1) == y)))
    guarded = cands["accuracy-guarded"]
    assert guarded["float_nodes"] >= cands[guard["from"]]["float_nodes"] + 1
    if report["chosen"] == "accuracy-guarded":
        errs = [f for f in report["float_nodes"] if f["reason"] == "quantization error"]
        assert errs and {f["node"] for f in errs} <= set(guard["error_nodes"])


def test_guard_also_runs_when_only_a_slower_than_fp32_candidate_is_accurate(mnv3, monkeypatch):
    """MobileViT-XXS measured: full int8 (5.6x slower than fp32) was the only candidate within
    max_drop, so int8-fast shipped it. The guard now starts from the fastest candidate instead, and
    the report says when the result is still slower than fp32."""
    import importlib

    module = importlib.import_module("gram_tf.convert.fast_int8")
    seen = []

    def accuracy(blob, *args, **kwargs):  # the first blob judged is full int8: only it is accurate
        seen.append(blob)
        return 1.0 if blob == seen[0] else 0.0

    monkeypatch.setattr(module, "blob_accuracy", accuracy)
    monkeypatch.setattr(module, "float_accuracy", lambda *a, **k: 1.0)
    monkeypatch.setattr(module, "_whole_model_times",
                        lambda blobs, threads: {k: {"fp32": 1.0, "full-int8": 2.0}.get(k, 0.5) for k in blobs})
    x, y = synthetic_images(4, seed=5), np.arange(4) % 2
    _, report = fast_int8(mnv3["model"], SIZE, mnv3["pre"], mnv3["rep"], threads=1, runs=1,
                          validation=(x, y), max_drop=0.01, max_guard_nodes=1, try_recipes=False)
    assert report["guard"]["from"] != "full-int8"  # the fastest candidate
    assert [s["float_nodes"] for s in report["guard"]["steps"]] == [1]
    # the guard found nothing accurate: the accurate full int8 is kept, and flagged as slower
    assert report["chosen"] == "full-int8" and report["slower_than_fp32"] is True
    # an accurate candidate faster than fp32: no guard, not flagged
    monkeypatch.setattr(module, "_whole_model_times",
                        lambda blobs, threads: {k: {"fp32": 1.0, "full-int8": 0.8}.get(k, 0.5) for k in blobs})
    seen.clear()
    _, report = fast_int8(mnv3["model"], SIZE, mnv3["pre"], mnv3["rep"], threads=1, runs=1,
                          validation=(x, y), max_drop=0.01, max_guard_nodes=1, try_recipes=False)
    assert "guard" not in report and report["chosen"] == "full-int8" and report["slower_than_fp32"] is False
