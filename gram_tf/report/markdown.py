"""Load benchmark result rows and turn them into a Markdown report with tables, statistics and plots.

Input rows are the flat benchmark rows (one per model x variant x runtime x threads) from
results.csv / results.json; see `COLUMNS`. A *model* is (run, backbone, sparsity_target, variant,
runtime); its *reference* is the dense fp32 LiteRT model of the same run and backbone (compared at
the same thread count for latency).

No TensorFlow here; matplotlib (Agg, figure objects only - no pyplot state) is imported lazily by
the plotting code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..config import AUTO_ON, BenchConfig
from ..errors import GramTFError, one_line
from ..metrics import within_drop
from ..io_utils import atomic_write_text
from . import stats
from .calibration import calibration_sections
from .plots import plot_accuracy_vs_latency, plot_sizes, plot_sparsity, pruned_groups
from .schema import (devices_of, in_domain, normalize_row, reference_model_key, sparsity_of, threads_of,
                     to_float, write_results)
from .shift import section_shift
from .view import (ALPHA, N_BOOT, ResultView, fmt_bytes, fmt_ci, fmt_ms, fmt_ms_ci, fmt_num, fmt_p, fmt_pct, fmt_pp,
                   fmt_rate, fmt_sp, fmt_x, fmt_x_ci, md_table, model_key, variant_rank)


# =========================================================================== report sections


def _auto_summary(d: ResultView, key, row) -> dict:
    run, bb, t = key
    m = d.models[model_key(row)]
    ref = d.ref(m.key)
    return {
        "run": run, "backbone": bb, "threads": t, "variant": row.get("variant"),
        "sparsity_target": sparsity_of(row), "runtime": row.get("runtime"), "path": row.get("path"),
        "accuracy": to_float(row.get("accuracy")), "fp32_accuracy": ref.accuracy if ref else None,
        "latency_ms_p50": to_float(row.get("latency_ms_p50")), "speedup_vs_fp32": d.speedup(m, t),
        "size_bytes": to_float(row.get("size_bytes")), "zip_bytes": to_float(row.get("zip_bytes")),
        "latency_ms_ci_low": to_float(row.get("latency_ms_ci_low")),
        "latency_ms_ci_high": to_float(row.get("latency_ms_ci_high")),
    }


def _timing_lines(d: ResultView, max_noise_pct: float, max_busy_cores: float) -> list:
    """How the latencies were timed and how noisy the machine was (the noise guard)."""
    rounds = sorted({int(r["rounds"]) for r in d.rows if to_float(r.get("rounds"))})
    noise = {}
    for r in d.rows:
        n = to_float(r.get("noise_pct"))
        if n is not None:
            t = threads_of(r)
            noise[t] = max(n, noise.get(t, 0.0))
    out = []
    if rounds:
        out.append(f"- Timing: {', '.join(map(str, rounds))} interleaved round(s) per model; latency = median of the "
                   "round medians [95% CI]; speed-up = median per-round ratio against fp32 [95% CI]; latencies whose "
                   "CIs overlap are **tied within noise** (docs/benchmark-and-report.md)")
    else:
        out.append("- Timing: one timing per model (no rounds: no CIs, ties cannot be called)")
    if noise:
        out.append("- Machine noise (fp32 round-to-round spread): " + ", ".join(
            f"{n:.1f} % at {t} thread(s)" for t, n in sorted(noise.items(), key=lambda kv: kv[0] or 0)))
    busy = [b for b in (to_float(r.get("busy_cores")) for r in d.rows) if b is not None]
    if busy:
        out.append(f"- Other processes' CPU use while timing: up to {max(busy):.2f} cores")
    problems = stats.noise_problems(d.rows, max_noise_pct, max_busy_cores)
    if problems:
        out.append(f"- **Latency conclusions unreliable**: {'; '.join(problems)}; {stats.ADVICE}.")
    return out


def _auto_note(d: ResultView, detail: dict) -> str:
    """What the auto choice beat: 'fastest', or the models it was tied with (it names no faster one)."""
    choice, fastest, ties = detail["choice"], detail["fastest"], detail["tied"]
    others = [r for r in ties if r is not choice]
    if not others:
        return "fastest"
    names = [f"{r.get('variant')}" + (f"@s{fmt_sp(sparsity_of(r))}" if sparsity_of(r) else "") for r in others]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"tied within noise with {shown}; smallest"


def _auto_on_text(rows, auto_on: str) -> str:
    """Where the auto choice's accuracy budget is checked, in words (stats.auto_sets)."""
    sets = stats.auto_sets(rows, auto_on)
    named = ", ".join(s for s in sets if s is not None)
    if sets == [None]:
        return "on the test split" + (" (auto_on external, but there are no external test sets)"
                                      if auto_on == "external" else "")
    if None not in sets:
        return f"on every external test set ({named})"
    return f"on the test split and on every external test set ({named})"


def _section_summary(d: ResultView, autos: dict, max_drop: float, max_noise_pct: float,
                     max_busy_cores: float, on: str = "on the test split") -> str:
    n_tests = sorted({m.n_test for m in d.models.values() if m.n_test is not None})
    out = ["## 1. Summary", ""]
    out.append(f"- Runs: {', '.join(d.runs) or 'n/a'}")
    out.append(f"- Backbones: {', '.join(d.backbones) or 'n/a'}")
    out.append(f"- Test images (n_test): {', '.join(str(int(n)) for n in n_tests) or 'n/a'}")
    out.append(f"- CPU threads tested: {', '.join(str(t) for t in d.threads) or 'n/a'}")
    out.append(f"- Result rows: {len(d.rows)} ({len(d.models)} models)")
    out += _timing_lines(d, max_noise_pct, max_busy_cores)
    if d.duplicates:
        out.append(f"- Warning: {d.duplicates} duplicate row(s) (same model and thread count) ignored; the first one was kept")
    out.append(
        f"- Auto choice (**auto**): per run, backbone and thread count, the fastest LiteRT model "
        f"(lowest p50 latency) whose accuracy is at least the dense fp32 accuracy − {100 * max_drop:.1f} "
        f"percentage points {on}; among models tied with it within noise, the smallest file."
    )
    out.append("")
    body = []
    for key in sorted(autos, key=lambda k: (str(k[0]), str(k[1]), k[2] if k[2] is not None else -1)):
        row = autos[key]["choice"]
        s = _auto_summary(d, key, row)
        m = d.models[model_key(row)]
        drop = (s["accuracy"] - s["fp32_accuracy"]) if s["accuracy"] is not None and s["fp32_accuracy"] is not None else None
        body.append(([s["run"]] if d.multi_run else []) + [
            s["backbone"], s["threads"], f"**{s['variant']}** (auto)", fmt_sp(s["sparsity_target"]),
            fmt_pct(s["accuracy"]), fmt_pct(s["fp32_accuracy"]), fmt_pp(drop), fmt_ms_ci(row),
            fmt_x_ci(row, s["speedup_vs_fp32"]), fmt_bytes(m.first("size_bytes")), fmt_bytes(m.first("zip_bytes")),
            _auto_note(d, autos[key]),
        ])
    if body:
        hdr = (["run"] if d.multi_run else []) + [
            "backbone", "threads", "auto choice", "sparsity", "accuracy", "fp32 accuracy", "Δ acc (pp)",
            "p50 (ms) [95% CI]", "speed-up vs fp32 [95% CI]", "size", "zip size", "why"]
        out.append(md_table(hdr, body))
    else:
        out.append("No auto choice: no dense fp32 LiteRT reference row with an accuracy was found.")
    groups = {stats.reference_key(r) for r in d.rows}
    skipped = sorted((g for g in groups if g not in autos), key=lambda g: (str(g[0]), str(g[1]), g[2] or -1))
    if skipped:
        out.append("")
        out.append("Skipped (no dense fp32 LiteRT reference): " + ", ".join(f"{g[1]} @ {'unknown' if g[2] is None else g[2]} threads" + (f" ({g[0]})" if d.multi_run else "") for g in skipped))
    return "\n".join(out)


def _auto_marks(d: ResultView, auto: dict) -> dict:
    marks: dict = {}
    for (run, bb, t), row in auto.items():
        marks.setdefault(model_key(row), []).append(t)
    return marks


def _section_models(d: ResultView, auto: dict) -> str:
    marks = _auto_marks(d, auto)
    n_tests = sorted({m.n_test for m in d.models.values() if m.n_test is not None})
    tl = " / ".join(f"{t}t" for t in d.threads)
    out = ["## 2. Models and configurations", ""]
    out.append(
        f"n = {', '.join(str(int(n)) for n in n_tests) or 'n/a'} test images per model. Accuracy with its 95% "
        f"percentile-bootstrap CI over test images ({N_BOOT} resamples; n/a without per-image results). "
        f"Latency: median (p50) ms per image at each thread count ({tl}); images/s and speed-up are listed per "
        f"thread count in the same order. Speed-up and size ratio are relative to the dense fp32 LiteRT model "
        f"of the same backbone (size ratio = size / fp32 size). 1 MB = 10^6 bytes. int8 recipe: what a "
        f"full-integer variant got besides the converter's min/max calibration (cle = cross-layer equalization, "
        f"bc = bias correction, percentile/mse/entropy = activation calibration; docs/quantization.md)."
    )
    out.append("")
    recipes = any(m.first("int8_recipe", None) for m in d.models.values())
    hdr = (["run"] if d.multi_run else []) + [
        "backbone", "sparsity", "variant", "runtime", "accuracy [95% CI]", "loss", "F1 (macro)", "AUC",
        "size", "zip size"] + [f"p50 @{t}t (ms)" for t in d.threads] + [
        f"images/s ({tl})", f"speed-up vs fp32 ({tl})", "size ratio vs fp32", "auto"] + (
        ["int8 recipe"] if recipes else [])
    body = []
    for k in d.keys:
        m = d.models[k]
        run, bb, sp, var, rt = k
        body.append(([run] if d.multi_run else []) + [
            bb, fmt_sp(sp), var, rt, f"{fmt_pct(m.accuracy)} {fmt_ci(m.ci)}",
            fmt_num(m.first("loss")), fmt_num(m.first("f1_macro")), fmt_num(m.first("auc")),
            fmt_bytes(m.first("size_bytes")), fmt_bytes(m.first("zip_bytes")),
        ] + [fmt_ms_ci(m.row(t)) for t in d.threads] + [
            d.per_thread(m, lambda mm, t: fmt_rate(to_float((mm.row(t) or {}).get("images_per_s")))),
            d.per_thread(m, lambda mm, t: fmt_x_ci(mm.row(t), d.speedup(mm, t))),
            fmt_num(d.size_ratio(m), 3),
            ("**auto** (" + ", ".join(f"{t}t" for t in sorted(marks[k], key=lambda x: x or 0)) + ")") if k in marks else "",
        ] + ([m.first("int8_recipe", None) or ""] if recipes else []))
    out.append(md_table(hdr, body))
    return "\n".join(out)


def _section_int8(d: ResultView) -> str:
    out = ["## 3. Per-channel vs per-tensor int8", ""]
    tl = " / ".join(f"{t}t" for t in d.threads)
    targets = sorted({(k[0], k[1], k[2]) for k in d.keys if k[4] == "litert" and k[3] in ("int8", "int8-per-tensor")},
                     key=lambda g: (str(g[0]), str(g[1]), g[2]))
    if not targets:
        out.append("No int8 or int8-per-tensor LiteRT models in these results.")
        return "\n".join(out)
    out.append(
        f"`int8` is full-integer quantization with per-channel weight scales, `int8-per-tensor` uses one scale per "
        f"tensor. Latency p50 (ms) and speed-up per thread count ({tl}); McNemar p against the dense fp32 LiteRT "
        f"model on the same test images. Δ = per-channel − per-tensor accuracy."
    )
    out.append("")
    any_sp = any(g[2] for g in targets)
    hdr = (["run"] if d.multi_run else []) + ["backbone"] + (["sparsity"] if any_sp else []) + ["fp32 accuracy"]
    for lab in ("per-channel", "per-tensor"):
        hdr += [f"{lab} accuracy [95% CI]", f"{lab} p50 ms ({tl})", f"{lab} speed-up", f"{lab} McNemar p"]
    hdr += ["Δ acc (pp)"]
    body = []
    for run, bb, sp in targets:
        ref = d.models.get((run, bb, 0.0, "fp32", "litert"))
        row = ([run] if d.multi_run else []) + [bb] + ([fmt_sp(sp)] if any_sp else []) + [fmt_pct(ref.accuracy if ref else None)]
        accs = []
        for var in ("int8", "int8-per-tensor"):
            m = d.models.get((run, bb, sp, var, "litert"))
            if m is None:
                row += ["n/a"] * 4
                accs.append(None)
                continue
            mc = d.mcnemar_vs(m, ref)
            row += [f"{fmt_pct(m.accuracy)} {fmt_ci(m.ci)}", d.per_thread(m, lambda mm, t: fmt_ms_ci(mm.row(t))),
                    d.per_thread(m, lambda mm, t: fmt_x_ci(mm.row(t), d.speedup(mm, t))), fmt_p(mc["p_value"]) if mc else "n/a"]
            accs.append(m.accuracy)
        row.append(fmt_pp(accs[0] - accs[1]) if None not in accs else "n/a")
        body.append(row)
    out.append(md_table(hdr, body))
    return "\n".join(out)


def _smallest_within(d: ResultView, run, bb, vs, max_drop: float):
    """The LiteRT model of (run, backbone) with the smallest zip size whose accuracy is within
    max_drop of the dense fp32 one (pruned, quantized or both), and that reference."""
    ref = d.models.get((run, bb, 0.0, "fp32", "litert"))
    if ref is None or ref.accuracy is None:
        return None, ref
    cands = [d.models[k] for k in d.keys if k[0] == run and str(k[1]) == bb and k[4] == "litert"
             and d.models[k].accuracy is not None and d.models[k].first("zip_bytes")
             and within_drop(ref.accuracy, d.models[k].accuracy, max_drop)]
    return (min(cands, key=lambda m: m.first("zip_bytes")) if cands else None), ref


def _section_pruning(d: ResultView, groups, max_drop: float = 0.01) -> str:
    out = ["## 4. Pruning level vs accuracy and size", ""]
    if not groups:
        out.append("No pruned models (sparsity_target > 0) in these results; the pruning table and plot are skipped.")
        return "\n".join(out)
    out.append(
        "One row per sparsity target and variant (the dense level of the same variant included). "
        "Measured sparsity is the fraction of zero weights. Δ acc is against the dense fp32 LiteRT model; "
        "\"× smaller (zip)\" = zip size of the dense fp32 .tflite / zip size of this model."
    )
    out.append("")
    hdr = (["run"] if d.multi_run else []) + [
        "backbone", "sparsity target", "measured sparsity", "variant", "runtime", "accuracy [95% CI]",
        "Δ acc vs dense fp32 (pp)", "size", "zip size", "× smaller (zip) vs dense fp32"] + [
        f"p50 @{t}t (ms)" for t in d.threads]
    body = []
    for (run, bb), vs in groups:
        ref = d.models.get((run, bb, 0.0, "fp32", "litert"))
        ref_zip = ref.first("zip_bytes") if ref else None
        ks = [k for k in d.keys if k[0] == run and str(k[1]) == bb and (k[3], k[4]) in vs]
        for k in sorted(ks, key=lambda k: (k[2], variant_rank(k[3]), str(k[4]))):
            m = d.models[k]
            zipb = m.first("zip_bytes")
            ms = m.first("sparsity")
            delta = (m.accuracy - ref.accuracy) if ref and ref.accuracy is not None and m.accuracy is not None else None
            body.append(([run] if d.multi_run else []) + [
                bb, fmt_sp(k[2]), "n/a" if ms is None else f"{ms:.3f}", k[3], k[4],
                f"{fmt_pct(m.accuracy)} {fmt_ci(m.ci)}", fmt_pp(delta), fmt_bytes(m.first("size_bytes")),
                fmt_bytes(zipb), fmt_x(ref_zip / zipb) if ref_zip and zipb else "n/a",
            ] + [fmt_ms_ci(m.row(t)) for t in d.threads])
    out.append(md_table(hdr, body))
    out += ["", f"Smallest artifact within {100 * max_drop:.1f} pp of the dense fp32 accuracy (any sparsity, any variant):", ""]
    for (run, bb), vs in groups:
        best, ref = _smallest_within(d, run, bb, vs, max_drop)
        name = f"{run}/{bb}" if d.multi_run else bb
        if best is None:
            out.append(f"- {name}: none (no dense fp32 LiteRT reference with an accuracy, or no model within the budget)")
            continue
        ratio = ref.first("zip_bytes") / best.first("zip_bytes") if ref.first("zip_bytes") else None
        out.append(f"- {name}: **{fmt_sp(best.key[2])} {best.key[3]}**, zip {fmt_bytes(best.first('zip_bytes'))} "
                   f"({fmt_x(ratio) if ratio else 'n/a'} smaller than the dense fp32 .tflite), accuracy "
                   f"{fmt_pct(best.accuracy)} {fmt_ci(best.ci)} vs {fmt_pct(ref.accuracy)}")
    return "\n".join(out)


def _friedman_block(title: str, blocks_text: str, res: dict | None, reason: str | None, extra: dict | None = None) -> list[str]:
    out = [f"### {title}", ""]
    if res is None:
        out.append(f"Skipped: {reason}.")
        return out
    out.append(blocks_text)
    out.append("")
    out.append(
        f"Friedman χ² = {res['statistic']:.3f}, p = {fmt_p(res['p_value'])} (k = {res['k']} models, "
        f"N = {res['n_blocks']} blocks). Nemenyi critical difference CD = {res['cd']:.3f} average ranks "
        f"(α = {res['alpha']:g}, q_α = {res['q_alpha']:.3f}); two models differ significantly when their average "
        f"ranks differ by more than CD."
        + (" Every block is a complete tie, so no model can be ranked above another." if res["all_tied"] else "")
    )
    out.append("")
    letters = {}
    for gi, g in enumerate(res["groups"]):
        for nm in g:
            letters.setdefault(nm, []).append(_letter(gi))
    hdr = ["rank order", "model", "average rank"] + (list(extra["columns"]) if extra else []) + ["CD group(s)"]
    body = []
    for i, nm in enumerate(res["order"], start=1):
        body.append([i, nm, f"{res['avg_ranks'][nm]:.2f}"] + (list(extra["values"][nm]) if extra else []) + ["".join(letters.get(nm, []))])
    out.append(md_table(hdr, body))
    out.append("")
    out.append("Models that share a CD-group letter are not significantly different (Nemenyi).")
    return out


def _letter(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(ord("A") + r) + s
    return s


def _section_stats(d: ResultView) -> tuple[str, dict]:
    out = ["## 5. Statistical tests", "", "### McNemar tests against fp32", ""]
    out.append(
        "Paired per test image. b = images the fp32 model got right and this model got wrong, c = the reverse. "
        f"Exact two-sided binomial test when b + c < {stats.EXACT_MCNEMAR_BELOW}, otherwise χ² with continuity "
        "correction. \"p vs dense fp32\" compares with the dense fp32 LiteRT model of the same backbone; "
        "\"p vs fp32 same sparsity\" (pruned models) with the fp32 LiteRT model at the same sparsity target, which "
        "isolates the quantization effect. p-values are not adjusted for multiple comparisons; n/a = no per-image "
        "results."
    )
    out.append("")
    hdr = (["run"] if d.multi_run else []) + [
        "backbone", "sparsity", "variant", "runtime", "accuracy", "b", "c", "statistic", "method",
        "p vs dense fp32", "p vs fp32 same sparsity"]
    body = []
    mcn = {}
    for k in d.keys:
        run, bb, sp, var, rt = k
        if k == reference_model_key(k):
            continue
        m = d.models[k]
        ref = d.ref(k)
        mc = d.mcnemar_vs(m, ref)
        same = None
        if sp > 0 and not (var == "fp32" and rt == "litert"):
            same = d.mcnemar_vs(m, d.models.get((run, bb, sp, "fp32", "litert")))
        mcn[k] = {"vs_dense_fp32": mc, "vs_fp32_same_sparsity": same}
        body.append(([run] if d.multi_run else []) + [
            bb, fmt_sp(sp), var, rt, fmt_pct(m.accuracy),
            mc["b"] if mc else "n/a", mc["c"] if mc else "n/a",
            f"{mc['statistic']:.3g}" if mc else "n/a", mc["method"] if mc else "n/a",
            fmt_p(mc["p_value"]) if mc else "n/a",
            fmt_p(same["p_value"]) if same else ("n/a" if sp > 0 and var != "fp32" else "–"),
        ])
    out.append(md_table(hdr, body) if body else "No models besides the fp32 reference.")
    out.append("")

    fried = {}
    # (a) all models of a run ranked per test image
    for run in sorted({k[0] for k in d.keys}, key=lambda x: str(x)):
        ks = [k for k in d.keys if k[0] == run and d.models[k].correct is not None]
        title = "Friedman + Nemenyi over models (blocks = test images)" + (f", run {run}" if d.multi_run else "")
        sizes = [d.models[k].correct.size for k in ks]
        if sizes:
            n = max(set(sizes), key=sizes.count)
            dropped = [k for k in ks if d.models[k].correct.size != n]
            ks = [k for k in ks if d.models[k].correct.size == n]
        else:
            dropped = []
        names = [d.label(k) for k in ks]
        if len(ks) < 3:
            res, reason = None, f"only {len(ks)} model(s) with per-image results; the Friedman test needs at least 3"
        else:
            mat = np.stack([d.models[k].correct.astype(float) for k in ks], axis=1)
            res = stats.friedman_nemenyi(mat, names, alpha=ALPHA)
            reason = stats.friedman_skip_reason(mat, names)
        text = (
            "Blocks are the individual test images (score 1 if the model classified the image correctly, else 0; "
            "ties share the average rank), so N = the number of test images. Test images are independent samples; "
            "bootstrap resamples were not used as blocks because they are not independent and their arbitrary "
            "number would shrink the critical difference at will."
        )
        if dropped:
            text += f" Left out (per-image results of a different length): {', '.join(d.label(k) for k in dropped)}."
        extra = {"columns": ["accuracy"], "values": {d.label(k): [fmt_pct(d.models[k].accuracy)] for k in ks}}
        out += _friedman_block(title, text, res, reason, extra)
        out.append("")
        fried[f"models/{run}"] = res
    # (b) backbones ranked across configurations, if there are >= 3 backbones
    for run in sorted({k[0] for k in d.keys}, key=lambda x: str(x)):
        bbs = sorted({str(k[1]) for k in d.keys if k[0] == run})
        title = "Friedman + Nemenyi over backbones (blocks = configurations)" + (f", run {run}" if d.multi_run else "")
        if len(bbs) < 3:
            out += [f"### {title}", "", f"Skipped: {len(bbs)} backbone(s); ranking backbones needs at least 3.", ""]
            fried[f"backbones/{run}"] = None
            continue
        confs = None
        for bb in bbs:
            c = {(k[2], k[3], k[4]) for k in d.keys if k[0] == run and str(k[1]) == bb and d.models[k].accuracy is not None}
            confs = c if confs is None else confs & c
        confs = sorted(confs or [], key=lambda c: (c[0], variant_rank(c[1]), str(c[2])))
        mat = np.array([[d.models[(run, bb, *c)].accuracy for bb in bbs] for c in confs], dtype=float).reshape(len(confs), len(bbs))
        res = stats.friedman_nemenyi(mat, bbs, alpha=ALPHA)
        reason = stats.friedman_skip_reason(mat, bbs)
        if res is None and len(confs) < 2:
            reason = f"only {len(confs)} configuration(s) (sparsity, variant, runtime) shared by all backbones; need at least 2"
        text = (
            "Blocks are the configurations (sparsity, variant, runtime) that every backbone has: "
            + ", ".join(f"{c[1]}@s{fmt_sp(c[0])}" + (f" [{c[2]}]" if c[2] != "litert" else "") for c in confs)
            + "; score = test accuracy."
        )
        out += _friedman_block(title, text, res, reason)
        out.append("")
        fried[f"backbones/{run}"] = res
    return "\n".join(out).rstrip(), {"mcnemar": mcn, "friedman": fried}


def _section_plots(plots: list[Path], pruned: bool) -> str:
    out = ["## 6. Plots", ""]
    caps = {
        "accuracy_vs_latency.png": "Accuracy vs p50 latency (1 thread, or the lowest thread count tested): colour = backbone, "
        "marker = variant, hollow = pruned; dashed step line = Pareto front of the LiteRT models; red rings = auto choices.",
        "size_per_variant.png": "Model size and zip size per variant and backbone.",
        "sparsity_vs_accuracy.png": "Accuracy and zip size vs pruning sparsity target, per backbone.",
    }
    for p in plots:
        out.append(f"![{p.stem.replace('_', ' ')}]({p.name})")
        out.append("")
        out.append(caps.get(p.name, ""))
        out.append("")
    if not pruned:
        out.append("sparsity_vs_accuracy.png was not drawn: there are no pruned models (sparsity_target > 0).")
    return "\n".join(out).rstrip()


# =========================================================================== entry point


def _section_devices(rows: list[dict], devices: list, max_drop: float, auto_on: str = AUTO_ON[0]) -> str:
    """Latency and speed-up vs fp32 per device side by side (the study's phone table), and the
    `auto` choice of each device: the fastest variant within the accuracy budget can differ."""
    names = [str(dev) for dev in devices]
    out = ["## 7. Devices", "",
           f"Sections 1-6 describe **{names[0]}**. Here every device's LiteRT rows side by side: p50 latency and "
           "speed-up against the same device's dense fp32 at the same threads. Accuracy and size are the same "
           "files' (imported rows are evaluated on this machine: see `accuracy_source`).", ""]
    lite = [r for r in rows if r.get("runtime") == "litert" and in_domain(r)]
    external = [r for r in rows if not in_domain(r)]  # accuracy of the same files elsewhere: every device's auto
    by = {}
    for r in lite:
        key = (str(r.get("run")), str(r.get("backbone")), sparsity_of(r), str(r.get("variant")), threads_of(r))
        by.setdefault(key, {})[r.get("device")] = r
    head = ["backbone", "sparsity", "variant", "threads"]
    for n in names:
        head += [f"{n} ms", f"{n} x fp32"]
    body = []
    for key in sorted(by, key=lambda k: (k[0], k[1], k[2], variant_rank(k[3]), k[4] or 0)):
        run, bb, sp, var, t = key
        line = [bb, fmt_sp(sp), var, t if t is not None else "n/a"]
        for dev in devices:
            r = by[key].get(dev)
            if r is None:
                line += ["-", "-"]
                continue
            ref = by.get((run, bb, 0.0, "fp32", t), {}).get(dev)
            p50, ref_p50 = to_float(r.get("latency_ms_p50")), to_float(ref.get("latency_ms_p50")) if ref else None
            line += [fmt_ms(p50), fmt_x(ref_p50 / p50 if p50 and ref_p50 else None)]
        body.append(line)
    out += [md_table(head, body), "", f"### auto per device (fastest within {100 * max_drop:.1f} pp of fp32)", ""]
    autos = {dev: stats.select_auto([r for r in lite if r.get("device") == dev] + external, max_drop=max_drop,
                                    auto_on=auto_on) for dev in devices}
    groups = sorted({k for a in autos.values() for k in a}, key=lambda k: (str(k[0]), str(k[1]), k[2] or 0))
    body = []
    for g in groups:
        line = [g[1], g[2] if g[2] is not None else "n/a"]
        for dev in devices:
            r = autos[dev].get(g)
            line.append("-" if r is None else f"{r.get('variant')}" + (f"@s{fmt_sp(sparsity_of(r))}" if sparsity_of(r) else "")
                        + f" ({fmt_ms(to_float(r.get('latency_ms_p50')))} ms)")
        body.append(line)
    out.append(md_table(["backbone", "threads", *names], body))
    return "\n".join(out)


def build_report(rows: Iterable[dict], out_dir, max_drop: float = 0.01, title: str = "gram_tf report",
                 max_noise_pct: float = BenchConfig.max_noise_pct,
                 max_busy_cores: float = BenchConfig.max_busy_cores, selective_target: float | None = None,
                 auto_on: str = AUTO_ON[0]) -> dict:
    """Write report.md, results.csv and the PNG plots into out_dir (created if needed).

    rows: result rows (typed by `load_results`, or raw benchmark dicts: they are normalized here).
    max_drop: accuracy drop allowed for the auto choice, absolute (0.01 = 1 percentage point).
    max_noise_pct, max_busy_cores: the noise guard (fp32 round-to-round spread, other processes' CPU use while
    timing) above which the summary marks latency conclusions unreliable.
    selective_target: accuracy (fraction) whose coverage section 9 states per artifact; None = the dense
    fp32 model's in-domain accuracy.
    auto_on: the sets whose accuracy the auto choice keeps within max_drop (config.AUTO_ON; stats.auto_sets).
    Rows of external test sets (`dataset` not in-domain) feed only the shift section and the auto choice;
    every other section reads the timed, in-domain rows.
    Every file is written atomically (temp file in out_dir + os.replace).

    Returns {"report": Path, "results_csv": Path, "plots": [Path, ...],
             "auto": {"<run>/<backbone>/threads=<t>": summary dict}, "skipped_plots": {name: reason}}.
    The auto summary has run, backbone, threads, variant, sparsity_target, runtime, path, accuracy,
    fp32_accuracy, latency_ms_p50, speedup_vs_fp32, size_bytes, zip_bytes.
    """
    try:
        rows = [normalize_row(r) for r in rows]
    except ValueError as e:
        raise GramTFError(f"invalid result row: {one_line(e)}") from e
    if not rows:
        raise GramTFError("no result rows to report; run the benchmark first or check the results paths")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_rows, devices = rows, devices_of([r for r in rows if in_domain(r)])
    if len(devices) > 1:  # sections 1-6 describe the first device; section 7 puts all side by side
        rows = [r for r in rows if r.get("device") == devices[0] or not in_domain(r)]
    if not any(in_domain(r) for r in rows):
        raise GramTFError("no in-domain result rows (dataset test or val) to report; external test set rows only "
                          "add to a benchmark's own rows")
    d = ResultView([r for r in rows if in_domain(r)])
    autos = stats.auto_choices(rows, max_drop=max_drop, auto_on=auto_on)
    auto = {k: v["choice"] for k, v in autos.items()}

    csv_path, _ = write_results(all_rows, out / "results.csv", json_twin=False)

    plots: list[Path] = []
    skipped: dict = {}
    p = out / "accuracy_vs_latency.png"
    plot_accuracy_vs_latency(d, auto, p)
    plots.append(p)
    p = out / "size_per_variant.png"
    plot_sizes(d, p)
    plots.append(p)
    pruned = pruned_groups(d)
    if pruned:
        p = out / "sparsity_vs_accuracy.png"
        plot_sparsity(d, pruned, p)
        plots.append(p)
    else:
        skipped["sparsity_vs_accuracy.png"] = "no pruned models (sparsity_target > 0)"

    stats_md, _ = _section_stats(d)
    parts = [
        f"# {title}",
        "",
        "Generated by `gram_tf.report` from the benchmark result rows (all rows are in [results.csv](results.csv)).",
        "",
        _section_summary(d, autos, max_drop, max_noise_pct, max_busy_cores, _auto_on_text(rows, auto_on)),
        "",
        _section_models(d, auto),
        "",
        _section_int8(d),
        "",
        _section_pruning(d, pruned, max_drop),
        "",
        stats_md,
        "",
        _section_plots(plots, bool(pruned)),
        "",
    ]
    if len(devices) > 1:
        parts += [_section_devices(all_rows, devices, max_drop, auto_on), ""]
    parts += [section_shift(d, rows), ""]
    calib_md, calib_plots, calib_skipped = calibration_sections(d, out, selective_target)
    parts += [calib_md, ""]
    plots += calib_plots
    skipped.update(calib_skipped)
    report_path = out / "report.md"
    atomic_write_text(report_path, "\n".join(parts))
    auto_out = {f"{k[0]}/{k[1]}/threads={k[2]}": _auto_summary(d, k, r) for k, r in auto.items()}
    return {"report": report_path, "results_csv": csv_path, "plots": plots, "auto": auto_out, "skipped_plots": skipped}
