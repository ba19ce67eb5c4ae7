"""int8-fast: profile-guided mixed int8/float, so int8 is never slower than float on this CPU.

Measured on AVX2 CPUs without VNNI (gram_tf.deploy.profile, docs/performance-x86.md "Why (measured, and read in the sources)"):
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

Speed is not the only judge: given validation images, only candidates within `max_drop` of the float
model's accuracy compete. When none is, the other int8 recipes (convert.recipe: cross-layer
equalization, bias correction, percentile/MSE calibration) are tried first, since a graph that stays
fully int8 is faster and smaller ("recipe:<tag>"); only if none is within `max_drop` does the
quantization debugger rank the tensors of the fastest candidate by error and the worst 1, 2, 4...
are kept in float too ("accuracy-guarded"), as in int8-selective. The guard also runs when every
candidate within `max_drop` is slower than fp32 (measured: MobileViT-XXS full int8 5.6x slower than
fp32 was the only one within 1 pp, while the delegate-only graph, faster than fp32, lost 3 pp).
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..config import NEVER
from ..deploy import make_interpreter, time_interleaved
from ..deploy.profile import CAST_OPS, delegation, op_profile, output_names
from ..errors import GramTFError
from ..metrics import within_drop
from .converter import CalibratedInt8, convert_model, representative_gen
from .calibration import Calibration
from .guard import float_accuracy, recover_accuracy
from .scoring import blob_accuracy
from .recipe import Int8Recipe, bias_correction_inputs
from .variants import Variant, register_variant


def recipe_alternatives(current: Int8Recipe | None, bias_inputs: str = "quantized") -> list[Int8Recipe]:
    """The recipes the accuracy guard tries, cheapest and most often enough first; bias correction
    with `bias_inputs` (`recipe.bias_correction_inputs`: `float` where one pass per layer is too dear)."""
    alternatives = [Int8Recipe(True, bias_inputs), Int8Recipe(False, bias_inputs),
                    Int8Recipe(False, NEVER, Calibration("mse")),
                    Int8Recipe(True, bias_inputs, Calibration("percentile")),
                    Int8Recipe(False, NEVER, Calibration("percentile")),
                    # last: EfficientNet's drifting swish ranges (docs/quantization.md); it
                    # collapses DeiT, which the guard's validation check catches
                    Int8Recipe(False, NEVER, Calibration("meanmax"))]
    tag = (current or Int8Recipe()).tag()
    return [r for r in alternatives if r.tag() != tag]


def _named_times(blob: bytes, threads: int, runs: int) -> dict:
    """{output tensor name: (op, isolated ms, delegated)} for every op of the model."""
    names = output_names(blob)
    return {names[r["index"]]: (r["op"], r["isolated_ms"], r["delegated"])
            for r in op_profile(blob, threads=threads, runs=runs)}


def choose_float_nodes(int8_times: dict, fp32_times: dict, margin: float, min_gain_ms: float) -> list[dict]:
    """The int8 nodes to keep in float, with the reason for each."""
    chosen = []
    for name, (op, ms, delegated) in int8_times.items():
        if op in CAST_OPS:
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
              batch_size: int = 1, validation: tuple | None = None, max_drop: float = 0.01,
              max_guard_nodes: int = 64, recipe: Int8Recipe | None = None,
              try_recipes: bool = True) -> tuple[bytes, dict]:
    """Mixed int8/float TFLite bytes and a report (float nodes and why, candidates, timings).

    `validation`: (uint8 images, integer labels); with it, only candidates within `max_drop` of the
    Keras model's accuracy are kept (see the module docstring), and the report holds the accuracies.
    """
    rep_gen = representative_gen(representative, preprocessing, batch_size)

    # calibrated once, re-quantized per denylist
    int8 = CalibratedInt8(model, size, rep_gen, batch_size, recipe, representative, preprocessing)
    fp32 = convert_model(model, "fp32", size, preprocessing, None, "float32", batch_size)
    fp32_times = _named_times(fp32, threads, runs)
    full_int8 = int8.quantize()
    int8_times = _named_times(full_int8, threads, runs)
    summaries: dict = {}  # blob digest -> delegation(blob)

    def summary_of(blob: bytes) -> dict:
        key = hashlib.sha1(blob).digest()
        if key not in summaries:
            summaries[key] = delegation(blob, threads)
        return summaries[key]

    first = summary_of(full_int8)
    chosen = choose_float_nodes(int8_times, fp32_times, margin, min_gain_ms)
    report = {"threads": threads, "margin": margin, "int8_partitions": first["partitions"],
              "int8_fallback_ops": first["fallback_ops"],
              "fp32_op_sum_ms": round(sum(t[1] for t in fp32_times.values()), 3),
              "int8_op_sum_ms": round(sum(t[1] for t in int8_times.values()), 3)}

    def mixed(start: list[dict], source=None) -> tuple[bytes, dict, list]:
        """Denylist `start`, re-convert, chase fallbacks that appear; (blob, denylist, rounds)."""
        source = source or int8
        denylist: dict[str, dict] = {}
        blob, todo, log = source.quantize(), start, []
        for _ in range(rounds):
            new = [c for c in todo if c["node"] not in denylist]
            if not new:
                break
            denylist.update({c["node"]: c for c in new})
            blob = source.quantize(denylist)
            summary = summary_of(blob)
            log.append({"float_nodes": len(denylist), "partitions": summary["partitions"],
                        "fallback_ops": summary["fallback_ops"]})
            # only new fallbacks are chased: a node chosen for speed is not re-judged
            todo = [{"node": f["node"], "op": f["op"], "reason": "not delegated in int8", "int8_ms": None,
                     "fp32_ms": fp32_times[f["node"]][1] if f["node"] in fp32_times else None}
                    for f in summary["fallback"] if f["op"] not in CAST_OPS]
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
    accuracy: dict = {}
    recipes: dict = {}  # candidate -> the int8 recipe report of a candidate built with another recipe
    if validation is not None and len(validation[1]):
        x_val, y_val = validation
        labels = [str(i) for i in range(int(model.output_shape[-1]))]

        def acc_of(blob: bytes) -> float:
            return blob_accuracy(blob, x_val, y_val, labels, size, preprocessing)

        float_acc = float_accuracy(model, x_val, y_val, preprocessing)
        accuracy = {k: acc_of(v[0]) for k, v in candidates.items()}
        report.update(float_val_accuracy=float_acc, n_val=int(len(y_val)), max_drop=max_drop)
        if not any(within_drop(float_acc, a, max_drop) for a in accuracy.values()) and try_recipes:
            tried = []
            bc_inputs = bias_correction_inputs(model, min(len(representative), Int8Recipe().calibration_images))
            for alt in recipe_alternatives(recipe, bc_inputs):
                try:
                    alt_int8 = CalibratedInt8(model, size, rep_gen, batch_size, alt, representative, preprocessing)
                except GramTFError as exc:  # a recipe this model's layers do not allow: the next one
                    tried.append({"recipe": alt.tag(), "error": str(exc)})
                    continue
                fallback = [{"node": f["node"], "op": f["op"], "reason": "not delegated in int8", "int8_ms": None,
                             "fp32_ms": None}
                            for f in summary_of(alt_int8.quantize())["fallback"]
                            if f["op"] not in CAST_OPS]
                cand = mixed(fallback, alt_int8) if fallback else (alt_int8.quantize(), {}, [])
                acc = acc_of(cand[0])
                tried.append({"recipe": alt.tag(), "val_accuracy": acc, "float_nodes": len(cand[1])})
                if within_drop(float_acc, acc, max_drop):
                    key = f"recipe:{alt.tag()}"
                    candidates[key], accuracy[key], recipes[key] = cand, acc, alt_int8.report
                    timed = _whole_model_times({"fp32": fp32, **{k: v[0] for k, v in candidates.items()}}, threads)
                    break
            report["recipes_tried"] = tried
        # the guard also runs when the only candidates within max_drop are slower than fp32 (a
        # transformer's full int8 with its builtin-kernel fallbacks): start from the fastest one
        if not any(within_drop(float_acc, a, max_drop) and timed[k] < timed["fp32"] for k, a in accuracy.items()):
            base = min((k for k in candidates if not k.startswith("recipe:")), key=lambda k: timed[k])
            guard = _accuracy_guard(int8, mixed, candidates[base][1], acc_of, float_acc, max_drop,
                                    max_guard_nodes)
            report["guard"] = {"from": base, **guard["report"]}
            if guard["candidate"] is not None:
                candidates["accuracy-guarded"] = guard["candidate"]
                accuracy["accuracy-guarded"] = guard["accuracy"]
                timed = _whole_model_times({"fp32": fp32, **{k: v[0] for k, v in candidates.items()}}, threads)
    ok = [k for k in candidates if not accuracy or within_drop(report["float_val_accuracy"], accuracy[k], max_drop)]
    # none within max_drop: the most accurate candidate, and the report says so
    best = min(ok, key=lambda k: timed[k]) if ok else max(accuracy, key=lambda k: (accuracy[k], -timed[k]))
    blob, denylist, log = candidates[best]
    final = summary_of(blob)
    report.update(chosen=best, recipe=recipes.get(best, int8.report), rounds=log,
                  float_nodes=list(denylist.values()), partitions=final["partitions"],
                  fallback_ops=final["fallback_ops"], whole_model_ms=timed,
                  candidates={k: {"float_nodes": len(v[1]), "whole_model_ms": timed[k],
                                  "partitions": summary_of(v[0])["partitions"],
                                  **({"val_accuracy": accuracy[k]} if accuracy else {})}
                              for k, v in candidates.items()})
    if accuracy:
        report.update(val_accuracy=accuracy[best], within_max_drop=bool(ok))
    # no mix was both accurate enough and faster: said plainly (the fp32 artifact is the faster one)
    report["slower_than_fp32"] = bool(timed[best] > timed["fp32"])
    return blob, report


def _accuracy_guard(int8, mixed, base_denylist: dict, acc_of, float_acc: float, max_drop: float,
                    max_nodes: int) -> dict:
    """Float kept for the highest-error tensors on top of `base_denylist`, fewest first."""
    ranked = [r for r in int8.ranked_errors(base_denylist) if r["tensor"] not in base_denylist]
    by_name = {r["tensor"]: r for r in ranked}

    def try_nodes(nodes):
        extra = [{"node": n, "op": by_name[n]["op"], "reason": "quantization error",
                  "rmse_over_scale": round(by_name[n]["rmse_over_scale"], 3)} for n in nodes]
        candidate = mixed(list(base_denylist.values()) + extra)
        return acc_of(candidate[0]), candidate

    acc, candidate, nodes, steps = recover_accuracy(try_nodes, [r["tensor"] for r in ranked], float_acc,
                                                    max_drop, max_nodes)
    return {"accuracy": acc, "candidate": candidate,
            "report": {"steps": steps, "error_nodes": nodes, "worst_layers": ranked[:10]}}


def _whole_model_times(blobs: dict, threads: int) -> dict:
    """Interleaved whole-model p50 ms of each blob (zero input), for the manifest."""
    runners = {}
    for key, blob in blobs.items():
        interp = make_interpreter(blob, threads)
        d = interp.get_input_details()[0]
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        runners[key] = interp.invoke
    timed = time_interleaved(runners, rounds=5, runs=10, warmup=2)
    return {k: round(v["latency_ms_p50"], 3) for k, v in timed.items()}


def _build(req):
    # options: fast_int8's keyword arguments (threads, margin, max_drop, runs, rounds...)
    return fast_int8(req.model, req.size, req.preprocessing, req.representative, batch_size=req.batch_size,
                     validation=req.validation, recipe=req.recipe, **req.options)


# profile-guided; float IO since some nodes may stay float
register_variant(Variant("int8-fast", "int8 where XNNPACK runs it faster, float elsewhere (profile-guided)", True,
                         _build, uses_validation=True, report_key="fast", per_channel=True,
                         config_options=lambda cfg: {"threads": cfg.fast_threads, "margin": cfg.fast_margin,
                                                     "max_drop": cfg.fast_max_drop_pp / 100}))  # a fraction here
