"""gram_tf.deploy.profile: XNNPACK delegation, fallbacks, per-op profile, `gram-tf profile`."""
from click.testing import CliRunner

from gram_tf.convert import convert_model
from gram_tf.deploy.profile import delegation, format_fallback, op_profile, output_names, summarize

from .conftest import MNV3_SIZE as SIZE


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


def test_each_one_op_model_computes_what_its_operator_computes_in_the_model(mnv3):
    """Fed the values its operator got in the whole model, each cut-out gives that operator's output there,
    bit for bit (builtin kernels on both sides: only they keep every intermediate tensor)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from gram_tf.deploy.profile import _single_op_models

    def interpreter(blob):
        it = Interpreter(model_content=blob, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
        return it

    for variant in ("fp32", "int8"):
        whole = interpreter(mnv3[variant])
        [inp] = whole.get_input_details()
        whole.set_tensor(inp["index"], np.random.default_rng(0).integers(0, 256, inp["shape"]).astype(inp["dtype"]))
        whole.invoke()
        ops = whole._get_ops_details()
        cut = list(_single_op_models(mnv3[variant]))
        assert len(cut) == len(ops) > 20
        for (index, name, _, blob, _), op in zip(cut, ops):
            one = interpreter(blob)
            assert name == op["op_name"], index
            by_name = {whole.get_tensor_details()[t]["name"]: t for t in op["inputs"] if t >= 0}
            for d in one.get_input_details():
                one.set_tensor(d["index"], whole.get_tensor(by_name[d["name"]]))
            one.invoke()
            [out] = one.get_output_details()
            np.testing.assert_array_equal(one.get_tensor(out["index"]), whole.get_tensor(op["outputs"][0]),
                                          err_msg=f"{variant} op {index} {name}")


def test_output_names_match_between_fp32_and_int8(mnv3):
    fp32, int8 = output_names(mnv3["fp32"]), output_names(mnv3["int8"])
    assert len(fp32) == len(int8) and set(int8) <= set(fp32)


def test_vit_graph_is_one_xnnpack_partition_in_fp32():
    """No shrink-axis STRIDED_SLICE left in the transformer (it cost DeiT a quarter of its time)."""
    import tf_keras

    from gram_tf.models import build_classifier

    tf_keras.utils.set_random_seed(0)
    model, info = build_classifier("deit_tiny", 2, SIZE, weights="none")
    d = delegation(convert_model(model, "fp32", SIZE, info["preprocessing"]))
    assert d["partitions"] == 1 and d["fallback_ops"] == {}, d["fallback_ops"]


def test_cli_profile(mnv3, tmp_path):
    from gram_tf.cli import main

    path = tmp_path / "m.tflite"
    path.write_bytes(mnv3["int8"])
    out = CliRunner().invoke(main, ["profile", str(path), "--runs", "2", "--csv", str(tmp_path / "ops.csv")])
    assert out.exit_code == 0, out.output
    d = delegation(str(path), 1)
    assert out.stdout.splitlines()[0] == (f"{path.name}: {d['nodes']} nodes, {d['delegated_nodes']} in XNNPACK, "
                                          f"{d['partitions']} partition(s); builtin fallbacks: {format_fallback(d)}")
    assert "HARD_SWISH" in format_fallback(d) and d["partitions"] > 1
    assert (tmp_path / "ops.csv").read_text().startswith("index,op,dtype,delegated")
