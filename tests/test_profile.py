"""Delegation analysis, per-op profile, profile-guided int8-fast, roofline columns, ONNX peers."""
import numpy as np
import pytest
from click.testing import CliRunner

from gram_tf.convert import convert_model
from gram_tf.convert import choose_float_nodes, fast_int8
from gram_tf.deploy.profile import delegation, format_fallback, op_profile, output_names, summarize
from gram_tf.bench.roofline import annotate, compute_dtype, theoretical_peak

SIZE = 32


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def mnv3():
    """MobileNetV3-Small at 32 px: hard-swish, which XNNPACK does not take in int8."""
    import tf_keras

    from gram_tf.models import build_classifier

    tf_keras.utils.set_random_seed(0)
    model, info = build_classifier("mobilenet_v3_small", 2, SIZE, weights="none")
    pre = info["preprocessing"]
    rep = _images(8)
    return {"model": model, "pre": pre, "rep": rep,
            "fp32": convert_model(model, "fp32", SIZE, pre),
            "int8": convert_model(model, "int8", SIZE, pre, rep)}


def test_delegation_finds_int8_fallbacks(mnv3):
    fp32, int8 = delegation(mnv3["fp32"]), delegation(mnv3["int8"])
    assert fp32["partitions"] == 1 and fp32["fallback_ops"] == {}
    assert fp32["delegated_nodes"] == fp32["nodes"]
    # every hard-swish falls back in int8 and splits the graph
    assert int8["fallback_ops"]["HARD_SWISH"] == int8["op_counts"]["HARD_SWISH"] > 0
    assert int8["partitions"] > int8["fallback_ops"]["HARD_SWISH"] // 2
    assert int8["delegated_nodes"] + int8["fallback_nodes"] == int8["nodes"]
    assert "HARD_SWISH" in format_fallback(int8)


def test_fallback_nodes_name_what_the_delegate_refused(mnv3):
    from gram_tf.deploy.profile import fallback_nodes

    d = delegation(mnv3["int8"])
    nodes = fallback_nodes(mnv3["int8"])
    assert len(nodes) == d["fallback_nodes"]
    assert {n["index"] for n in nodes}.isdisjoint(d["delegated_index"])
    names = output_names(mnv3["int8"])
    assert all(names[n["index"]] == n["node"] for n in nodes)
    assert sum(n["op"] == "HARD_SWISH" for n in nodes) == d["fallback_ops"]["HARD_SWISH"]
    assert fallback_nodes(mnv3["fp32"]) == []


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


def test_op_profile_rows_and_summary(mnv3):
    rows = op_profile(mnv3["int8"], threads=1, runs=3, warmup=1)
    d = delegation(mnv3["int8"])
    assert len(rows) == d["nodes"]
    assert {r["index"] for r in rows if r["delegated"]} == set(d["delegated_index"])
    assert all(r["isolated_ms"] > 0 for r in rows)
    assert {r["dtype"] for r in rows if r["op"] == "CONV_2D"} == {"int8"}
    # MACs of the 1x1/3x3 convolutions + FC add up to the Keras count within the head/pool rounding
    from gram_tf.models import count_macs

    total = sum(r["macs"] for r in rows)
    assert 0.9 < total / count_macs(mnv3["model"]) < 1.1
    table = summarize(rows, whole_model_ms=1.0)
    shares = [t["share"] for t in table if t["kernel"]]
    assert abs(sum(shares) - 1) < 0.01
    assert {"builtin", "xnnpack"} <= {t["kernel"] for t in table}
    assert table[-1]["op"] == "(whole model)"


def test_output_names_match_between_fp32_and_int8(mnv3):
    fp32, int8 = output_names(mnv3["fp32"]), output_names(mnv3["int8"])
    assert len(fp32) == len(int8) and set(int8) <= set(fp32)


def test_choose_float_nodes_rules():
    fp32 = {"a": ("CONV_2D", 1.0, True), "b": ("CONV_2D", 1.0, True), "c": ("ADD", 0.1, True)}
    int8 = {"a": ("CONV_2D", 1.5, True),          # slower by 50%: float
            "b": ("CONV_2D", 1.02, True),         # within margin: int8
            "c": ("ADD", 0.05, False),            # falls out of the delegate: float
            "q": ("QUANTIZE", 9.0, True)}         # conversion ops are never denylisted
    chosen = {c["node"]: c["reason"] for c in choose_float_nodes(int8, fp32, margin=0.05, min_gain_ms=0.01)}
    assert chosen == {"a": "slower in int8", "c": "not delegated in int8"}


def test_int8_fast_removes_fallbacks_and_keeps_predictions(mnv3):
    x_val, y_val = _images(8, seed=6), np.arange(8) % 2
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
    x = _images(16, seed=3)
    probs = Classifier(path, labels=["a", "b"], input_size=SIZE, preprocessing=mnv3["pre"]).predict_arrays(x)
    from gram_tf.data import make_dataset

    ref = mnv3["model"].predict(make_dataset(x, None, mnv3["pre"], 16), verbose=0)
    assert np.abs(probs - ref).max() < 0.15
    os.unlink(path)


def test_int8_fast_accuracy_guard_adds_high_error_nodes(mnv3):
    """With validation data only accurate candidates compete; when none is, the debugger's worst
    tensors are kept float on top of the fastest candidate (max_drop < 0 forces the search)."""
    x, y = _images(12, seed=5), np.arange(12) % 2
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


def test_vit_graph_is_one_xnnpack_partition_in_fp32():
    """No shrink-axis STRIDED_SLICE left in the transformer (it cost DeiT a quarter of its time)."""
    import tf_keras

    from gram_tf.models import build_classifier

    tf_keras.utils.set_random_seed(0)
    model, info = build_classifier("deit_tiny", 2, SIZE, weights="none")
    d = delegation(convert_model(model, "fp32", SIZE, info["preprocessing"]))
    assert d["partitions"] == 1 and d["fallback_ops"] == {}, d["fallback_ops"]


def test_roofline_columns():
    flags = {"flags": ["avx2", "fma"], "mhz": 2000.0}
    est = theoretical_peak(flags, 2)
    assert est["fp32_gmacs"] == 64.0  # 2 FMA pipes x 8 lanes x 2 GHz x 2 cores
    assert est["int8_gmacs"] == 128.0
    assert theoretical_peak({"flags": ["avx2", "fma", "avx512f", "avx512_vnni"], "mhz": 1000.0}, 1)[
        "int8_gmacs"] == 128.0
    assert compute_dtype("int8-fast") == "int8" and compute_dtype("fp16") == "fp32"
    rows = [{"variant": "int8", "threads": 2, "gmacs_per_s": 20.0},
            {"variant": "fp32", "threads": 1, "gmacs_per_s": 10.0},
            {"variant": "fp32", "threads": 4, "gmacs_per_s": 10.0}]
    annotate(rows, {"peak": {"int8@2": 80.0, "fp32@1": 40.0}})
    assert rows[0]["frac_of_peak"] == 0.25 and rows[1]["frac_of_peak"] == 0.25
    assert rows[2]["frac_of_peak"] is None


def test_cli_profile(mnv3, tmp_path):
    from gram_tf.cli import main

    path = tmp_path / "m.tflite"
    path.write_bytes(mnv3["int8"])
    out = CliRunner().invoke(main, ["profile", str(path), "--runs", "2", "--csv", str(tmp_path / "ops.csv")])
    assert out.exit_code == 0, out.output
    assert "partition" in out.output and "HARD_SWISH" in out.output
    assert (tmp_path / "ops.csv").read_text().startswith("index,op,dtype,delegated")


def test_onnx_peers(mnv3, tmp_path):
    pytest.importorskip("tf2onnx", reason="ONNX Runtime peers need the 'peers' extra (tf2onnx)")
    pytest.importorskip("onnxruntime", reason="needs the 'peers' extra (onnxruntime)")
    from gram_tf.bench import peers
    from gram_tf.convert import normalized_images as data_mod_normalize

    fp32 = peers.export_onnx(mnv3["model"], SIZE, tmp_path / "m.onnx")
    x = data_mod_normalize(_images(8), mnv3["pre"])
    int8 = peers.quantize_onnx(fp32, tmp_path / "m_int8.onnx", x)
    row = peers.time_onnx(int8, 1, x, runs=3, warmup=1)
    assert row["runtime"] == "onnxruntime" and row["latency_ms_p50"] > 0
    ref = mnv3["model"].predict(x, verbose=0)
    out = peers.session(fp32, 1).run(None, {"image": x[:1]})[0]
    assert np.abs(out - ref[:1]).max() < 1e-4


def test_time_interleaved_orders_and_reports_drift():
    import time

    from gram_tf.deploy import time_interleaved

    calls = {"slow": 0, "fast": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.004)

    def fast():
        calls["fast"] += 1

    out = time_interleaved({"slow": slow, "fast": fast}, rounds=3, runs=5, warmup=1)
    assert calls == {"slow": 1 + 3 * 6, "fast": 1 + 3 * 6}  # warmup + (1 untimed + runs) per round
    assert out["slow"]["latency_ms_p50"] >= 4.0 > out["fast"]["latency_ms_p50"]
    assert out["slow"]["runs"] == 15
    assert out["slow"]["round_p50_min"] <= out["slow"]["latency_ms_p50"] <= out["slow"]["round_p50_max"] * 1.5


def test_cli_peak_measures_both_dtypes():
    import json

    from gram_tf.cli import main

    out = CliRunner().invoke(main, ["peak", "--threads", "1", "--json"])
    assert out.exit_code == 0, out.output
    peak = json.loads(out.output[out.output.index("{"):])
    assert set(peak["peak"]) == {"fp32@1", "int8@1"}
    assert all(v > 0.5 for v in peak["peak"].values())  # any CPU does > 0.5 GMAC/s
    assert peak["theoretical"]["1"]["fp32_gmacs"] >= 0
