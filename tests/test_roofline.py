"""gram_tf.bench.roofline (measured peak, roofline columns) and gram_tf.bench.peers (ONNX Runtime)."""
import numpy as np
import pytest
from click.testing import CliRunner

from gram_tf.bench.roofline import PEAK_MACS, add_roofline_columns, compute_dtype, theoretical_peak

from .conftest import MNV3_SIZE as SIZE, synthetic_images


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
    add_roofline_columns(rows, {"peak": {"int8@2": 80.0, "fp32@1": 40.0}})
    assert rows[0]["frac_of_peak"] == 0.25 and rows[1]["frac_of_peak"] == 0.25
    assert rows[2]["frac_of_peak"] is None


def test_onnx_peers(mnv3, tmp_path):
    pytest.importorskip("tf2onnx", reason="ONNX Runtime peers need the 'peers' extra (tf2onnx)")
    pytest.importorskip("onnxruntime", reason="needs the 'peers' extra (onnxruntime)")
    from gram_tf.bench import peers
    from gram_tf.convert import normalized_images as data_mod_normalize

    fp32 = peers.export_onnx(mnv3["model"], SIZE, tmp_path / "m.onnx")
    x = data_mod_normalize(synthetic_images(8), mnv3["pre"])
    int8 = peers.quantize_onnx(fp32, tmp_path / "m_int8.onnx", x)
    row = peers.time_onnx(int8, 1, x, runs=3, warmup=1)
    assert row["runtime"] == "onnxruntime" and row["latency_ms_p50"] > 0
    ref = mnv3["model"].predict(x, verbose=0)
    out = peers.session(fp32, 1).run(None, {"image": x[:1]})[0]
    assert np.abs(out - ref[:1]).max() < 1e-4


def test_cli_peak_measures_both_dtypes():
    import json

    from gram_tf.cli import main

    out = CliRunner().invoke(main, ["peak", "--threads", "1", "--json"])
    assert out.exit_code == 0, out.output
    peak = json.loads(out.output[out.output.index("{"):])
    assert set(peak["peak"]) == {"fp32@1", "int8@1"}
    assert all(v > 0.5 for v in peak["peak"].values())  # any CPU does > 0.5 GMAC/s
    # the ISA estimate printed beside it is theoretical_peak of the CPU it reports, for each thread count
    assert peak["theoretical"] == {"1": theoretical_peak(peak["cpu"], 1)}
    assert peak["macs"] == PEAK_MACS
