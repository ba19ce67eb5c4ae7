"""Where a .tflite model's time goes under LiteRT + XNNPACK: delegation and a per-op profile.

LiteRT's Python interpreter has no profiler hook, so this module measures it two ways:

- `delegation(path)`: which nodes the XNNPACK delegate took, in how many partitions, and which op
  types fell back to TFLite's builtin kernels (each fallback splits the graph and adds a
  delegate <-> builtin hand-over). A partition's nodes are found by walking back from its output
  tensors to its input tensors (partitions are convex sub-graphs).
- `op_profile(path)`: every operator cut out into its own one-op model (same tensors, quantization
  and weights) and timed alone, with the same runtime and threads. Delegated ops run in XNNPACK,
  the rest in the builtin kernels, exactly as in the full model. Summed per op type this says which
  op types cost the time; isolated timing includes a few microseconds of invoke overhead per op,
  so the sum is a little above the whole-model latency.

Needs only numpy and ai_edge_litert (its flatbuffer schema), like the deployed classifier.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import GramTFError
from ..io_utils import read_capped
from .interpreter import make_interpreter
from .timing import time_blob

MAX_MODEL_BYTES = 2 << 30  # a flatbuffer's own limit: read whole, a larger "model" is not one

# TFLite op names gram_tf reads, named once for the deploy and convert wings.
# Ops with a weight tensor (input 1) whose multiply-accumulates we count (the ones a roofline is about).
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV")
DELEGATE = "DELEGATE"  # the node that replaces a partition a delegate (XNNPACK) runs
CAST_OPS = ("QUANTIZE", "DEQUANTIZE")  # the conversions at int8/float boundaries, not work of their own


def _read(src) -> bytes:
    """Model bytes from a path or bytes."""
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    return read_capped(src, MAX_MODEL_BYTES, "model file")


def output_names(src) -> list[str]:
    """Name of each operator's first output tensor (stable between fp32 and int8 conversions)."""
    interp = make_interpreter(src, 1)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    return [names[int(op["outputs"][0])] for op in interp._get_ops_details() if op["op_name"] != DELEGATE]


def _partition_nodes(ops: list[dict]) -> list[set[int]]:
    """Original node indices inside each DELEGATE node."""
    producer = {}
    for op in ops:
        if op["op_name"] != DELEGATE:
            for t in op["outputs"]:
                producer[int(t)] = op["index"]
    parts = []
    for op in ops:
        if op["op_name"] != DELEGATE:
            continue
        stop = {int(t) for t in op["inputs"]}
        members: set[int] = set()
        stack = [int(t) for t in op["outputs"]]
        while stack:
            t = stack.pop()
            node = producer.get(t)
            if t in stop or node is None or node in members:
                continue
            members.add(node)
            stack.extend(int(x) for x in ops[node]["inputs"] if x >= 0)
        parts.append(members)
    return parts


def delegation(src, threads: int = 1) -> dict:
    """How XNNPACK partitions a model (path or bytes): nodes, delegated nodes, partitions, fallbacks
    (`fallback`: index, op type and output tensor name of each node the delegate did not take)."""
    interp = make_interpreter(src, threads)
    ops = interp._get_ops_details()
    original = [op for op in ops if op["op_name"] != DELEGATE]
    parts = _partition_nodes(ops)
    delegated = set().union(*parts) if parts else set()
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    fallback_list = [{"index": op["index"], "op": op["op_name"], "node": names[int(op["outputs"][0])]}
                     for op in original if op["index"] not in delegated]
    fallback = Counter(f["op"] for f in fallback_list)
    by_type = Counter(op["op_name"] for op in original)
    return {
        "nodes": len(original),
        "delegated_nodes": len(delegated),
        "partitions": len(parts),
        "fallback_nodes": sum(fallback.values()),
        "fallback_ops": dict(sorted(fallback.items(), key=lambda kv: -kv[1])),
        "op_counts": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        "delegated_index": sorted(delegated),
        "fallback": fallback_list,
    }


def fallback_nodes(src, threads: int = 1) -> list[dict]:
    """The nodes XNNPACK did not take: index, op type and output tensor name of each."""
    return delegation(src, threads)["fallback"]


def format_fallback(summary: dict) -> str:
    """'BATCH_MATMUL 22/24, SOFTMAX 12/12' or 'none'."""
    items = [f"{op} {n}/{summary['op_counts'][op]}" for op, n in summary["fallback_ops"].items()]
    return ", ".join(items) or "none"


# ------------------------------------------------------------------ one-op models
def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - tflite_runtime has no schema module
        raise GramTFError("the per-op profile needs ai-edge-litert (pip install ai-edge-litert)") from None
    return schema


def _op_macs(op_name: str, tensors, op) -> int:
    if op_name not in MAC_OPS:
        return 0
    out = tensors[op.outputs[0]]
    out_elems = int(np.prod(out.shape)) if out.shape is not None else 0
    if op_name == "BATCH_MATMUL":
        a = tensors[op.inputs[0]].shape
        adj_x = bool(getattr(op.builtinOptions, "adjX", False))
        return out_elems * int(a[-2] if adj_x else a[-1])
    w = tensors[op.inputs[1]].shape
    if op_name == "CONV_2D":          # OHWI
        return out_elems * int(w[1] * w[2] * w[3])
    if op_name == "DEPTHWISE_CONV_2D":  # 1HWO
        return out_elems * int(w[1] * w[2])
    if op_name == "TRANSPOSE_CONV":
        return int(np.prod(tensors[op.inputs[2]].shape)) * int(w[0] * w[1] * w[2])
    return out_elems * int(w[-1])  # FULLY_CONNECTED: weights [out, in]


def _single_op_models(blob: bytes):
    """Yield (index, op_name, output dtype, one-op model bytes, macs) per operator of subgraph 0.

    Each one-op model holds only its operator's tensors and their buffers, renumbered: packing the whole
    tensor table (names, per-channel scales) per operator took 0.12 s each on BEiT-base (512 ops, a minute)."""
    import copy

    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(blob, 0)
    if len(model.subgraphs) != 1:
        raise GramTFError("per-op profile supports single-subgraph models only")
    sg = model.subgraphs[0]
    ops, tensors, buffers = list(sg.operators), list(sg.tensors), list(model.buffers)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model.signatureDefs, model.metadata, model.metadataBuffer = None, None, None

    def has_data(t: int) -> bool:
        b = buffers[tensors[t].buffer]
        return b.data is not None and len(b.data) > 0

    for i, op in enumerate(ops):
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        extra = list(op.intermediates) if op.intermediates is not None else []
        used = list(dict.fromkeys(t for t in [*op.inputs, *op.outputs, *extra] if t >= 0))
        new_index = {t: j for j, t in enumerate(used)}
        new_buffers, new_tensors = [schema.BufferT()], []  # buffer 0: the empty sentinel TFLite expects
        for t in used:
            tensor = copy.copy(tensors[t])
            if tensor.buffer and has_data(t):
                new_buffers.append(buffers[tensor.buffer])
                tensor.buffer = len(new_buffers) - 1
            else:
                tensor.buffer = 0
            new_tensors.append(tensor)
        one = copy.copy(op)
        one.inputs = [new_index[t] if t >= 0 else -1 for t in op.inputs]
        one.outputs = [new_index[t] for t in op.outputs]
        if extra:
            one.intermediates = [new_index[t] for t in extra]
        sg.operators, sg.tensors = [one], new_tensors
        sg.inputs = [new_index[t] for t in op.inputs if t >= 0 and not has_data(t)]
        sg.outputs = [new_index[t] for t in op.outputs]
        model.buffers = new_buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        dtype = types.get(tensors[op.outputs[0]].type, "?")
        yield i, name, dtype, bytes(builder.Output()), _op_macs(name, tensors, op)
    sg.operators, sg.tensors, model.buffers = ops, tensors, buffers


def op_profile(src, threads: int = 1, runs: int = 20, warmup: int = 3, seed: int = 0,
               progress: bool = False) -> list[dict]:
    """One row per operator: index, op, dtype, delegated (in the full model), isolated_ms, macs."""
    blob = _read(src)
    in_full_model = set(delegation(blob, threads)["delegated_index"])
    rng = np.random.default_rng(seed)
    items = list(_single_op_models(blob))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="profiling ops", leave=False)
    rows = []
    for index, name, dtype, one_op, macs in items:
        ms = time_blob(one_op, threads, runs, warmup, rng)
        rows.append({"index": index, "op": name, "dtype": dtype, "delegated": index in in_full_model,
                     "isolated_ms": ms, "macs": macs})
        if bar:
            bar.update()
    if bar:
        bar.close()
    return rows


def summarize(rows: list[dict], whole_model_ms: Optional[float] = None) -> list[dict]:
    """Per (op type, delegated): count, summed isolated ms, share of the sum, MACs, GMAC/s."""
    groups: dict[tuple, dict] = defaultdict(lambda: {"count": 0, "ms": 0.0, "macs": 0})
    for r in rows:
        g = groups[(r["op"], r["dtype"], r["delegated"])]
        g["count"] += 1
        g["ms"] += r["isolated_ms"]
        g["macs"] += r["macs"]
    total = sum(g["ms"] for g in groups.values()) or 1.0
    out = []
    for (op, dtype, delegated), g in sorted(groups.items(), key=lambda kv: -kv[1]["ms"]):
        out.append({"op": op, "dtype": dtype, "kernel": "xnnpack" if delegated else "builtin",
                    "count": g["count"], "ms": round(g["ms"], 3), "share": round(g["ms"] / total, 4),
                    "gmacs": round(g["macs"] / 1e9, 4),
                    "gmacs_per_s": round(g["macs"] / (g["ms"] / 1e3) / 1e9, 2) if g["macs"] and g["ms"] else None})
    if whole_model_ms is not None:
        out.append({"op": "(sum of isolated ops)", "dtype": "", "kernel": "", "count": len(rows),
                    "ms": round(total, 3), "share": 1.0, "gmacs": None, "gmacs_per_s": None})
        out.append({"op": "(whole model)", "dtype": "", "kernel": "", "count": None,
                    "ms": round(whole_model_ms, 3), "share": None, "gmacs": None, "gmacs_per_s": None})
    return out


def whole_model_ms(src, threads: int = 1, runs: int = 30, warmup: int = 5, seed: int = 0) -> float:
    return time_blob(_read(src), threads, runs, warmup, np.random.default_rng(seed))
