"""int8-fast: profile-guided mixed int8/float, so int8 is never slower than float on this CPU.

Measured on AVX2 CPUs without VNNI (gram_tf.profile, README "Why int8 is not 3x faster here"):
XNNPACK's int8 GEMM runs at about the float FMA rate, and every op the delegate does not take in
int8 (BATCH_MATMUL with a non-zero zero point, SOFTMAX, GELU, HARD_SWISH, LayerNorm's
SQUARED_DIFFERENCE/RSQRT/SUB) falls back to slow builtin kernels and splits the graph.

So: convert fp32 and full int8, time every op of both alone (same threads), and build candidates
with float kept for each int8 node that (a) falls out of the delegate ("delegate-only") or also
(b) runs slower than its float twin by more than `margin` ("profile-guided"); nodes are matched
by output tensor name (the converter keeps them) and re-conversion repeats until no new fallback
appears. QUANTIZE/DEQUANTIZE between int8 and float parts run inside XNNPACK, so the graph stays
one partition. The candidates and full int8 are then timed whole, interleaved with fp32, and the
fastest is kept: isolated op times miss what a float island costs at the boundaries.
"""
from __future__ import annotations

import numpy as np

from .errors import GramTFError


def _named_times(blob: bytes, threads: int, runs: int) -> dict:
    """{output tensor name: (op, isolated ms, delegated)} for every op of the model."""
    from .profile import op_profile, output_names

    names = output_names(blob)
    return {names[r["index"]]: (r["op"], r["isolated_ms"], r["delegated"])
            for r in op_profile(blob, threads=threads, runs=runs)}


def choose_float_nodes(int8_times: dict, fp32_times: dict, margin: float, min_gain_ms: float) -> list[dict]:
    """The int8 nodes to keep in float, with the reason for each."""
    chosen = []
    for name, (op, ms, delegated) in int8_times.items():
        if op in ("QUANTIZE", "DEQUANTIZE"):
            continue
        twin = fp32_times.get(name)
        if not delegated:
            chosen.append({"node": name, "op": op, "reason": "not delegated in int8", "int8_ms": ms,
                           "fp32_ms": twin[1] if twin else None})
        elif twin and ms > twin[1] * (1 + margin) and ms - twin[1] > min_gain_ms:
            chosen.append({"node": name, "op": op, "reason": "slower in int8", "int8_ms": ms, "fp32_ms": twin[1]})
    return chosen


def fast_int8(model, size: int, preprocessing: dict, representative: np.ndarray, threads: int = 2,
              margin: float = 0.05, min_gain_ms: float = 0.01, runs: int = 15, rounds: int = 3,
              batch_size: int = 1) -> tuple[bytes, dict]:
    """Mixed int8/float TFLite bytes and a report (float nodes and why, estimated op-sum times)."""
    from .convert import convert_model, int8_with_float_nodes, representative_gen
    from .profile import delegation

    if representative is None or len(representative) == 0:
        raise GramTFError("int8-fast needs a representative dataset (training images)")
    rep_gen = representative_gen(representative, preprocessing, batch_size)

    def quantized(denylist: list[str]) -> bytes:
        return int8_with_float_nodes(model, size, rep_gen, denylist, batch_size)[1]

    fp32 = convert_model(model, "fp32", size, preprocessing, None, "float32", batch_size)
    fp32_times = _named_times(fp32, threads, runs)
    full_int8 = quantized([])
    int8_times = _named_times(full_int8, threads, runs)
    first = delegation(full_int8, threads)
    chosen = choose_float_nodes(int8_times, fp32_times, margin, min_gain_ms)
    report = {"threads": threads, "margin": margin, "int8_partitions": first["partitions"],
              "int8_fallback_ops": first["fallback_ops"],
              "fp32_op_sum_ms": round(sum(t[1] for t in fp32_times.values()), 3),
              "int8_op_sum_ms": round(sum(t[1] for t in int8_times.values()), 3)}

    def mixed(start: list[dict]) -> tuple[bytes, dict, list]:
        """Denylist `start`, re-convert, chase fallbacks that appear; (blob, denylist, rounds)."""
        denylist: dict[str, dict] = {}
        blob, todo, log = full_int8, start, []
        for _ in range(rounds):
            new = [c for c in todo if c["node"] not in denylist]
            if not new:
                break
            denylist.update({c["node"]: c for c in new})
            blob = quantized(list(denylist))
            times = _named_times(blob, threads, runs)
            summary = delegation(blob, threads)
            log.append({"float_nodes": len(denylist), "partitions": summary["partitions"],
                        "fallback_ops": summary["fallback_ops"],
                        "op_sum_ms": round(sum(t[1] for t in times.values()), 3)})
            # only new fallbacks are chased: a node chosen for speed is not re-judged
            todo = [c for c in choose_float_nodes(times, fp32_times, margin, min_gain_ms)
                    if c["reason"] == "not delegated in int8"]
        return blob, denylist, log

    # Three candidates, judged whole: the op-level choice ignores what a float island costs
    # (QUANTIZE/DEQUANTIZE, one more thread-pool dispatch), so the fastest complete graph wins.
    candidates = {"full-int8": (full_int8, {}, [])}
    fallbacks = [c for c in chosen if c["reason"] == "not delegated in int8"]
    if fallbacks:
        candidates["delegate-only"] = mixed(fallbacks)
    if len(chosen) > len(fallbacks):
        candidates["profile-guided"] = mixed(chosen)
    timed = _whole_model_times({"fp32": fp32, **{k: v[0] for k, v in candidates.items()}}, threads)
    best = min(candidates, key=lambda k: timed[k])
    blob, denylist, log = candidates[best]
    final = delegation(blob, threads)
    report.update(chosen=best, rounds=log, float_nodes=list(denylist.values()), partitions=final["partitions"],
                  fallback_ops=final["fallback_ops"], whole_model_ms=timed,
                  candidates={k: {"float_nodes": len(v[1]), "whole_model_ms": timed[k],
                                  "partitions": delegation(v[0], threads)["partitions"]}
                              for k, v in candidates.items()})
    return blob, report


def _whole_model_times(blobs: dict, threads: int) -> dict:
    """Interleaved whole-model p50 ms of each blob (zero input), for the manifest."""
    from .bench import time_interleaved
    from .profile import _interpreter

    runners = {}
    for key, blob in blobs.items():
        interp = _interpreter(blob, threads)
        d = interp.get_input_details()[0]
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        runners[key] = interp.invoke
    timed = time_interleaved(runners, rounds=5, runs=10, warmup=2)
    return {k: round(v["latency_ms_p50"], 3) for k, v in timed.items()}
