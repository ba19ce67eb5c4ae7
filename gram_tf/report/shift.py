"""Does compression hurt generalization? Every model's accuracy drop against its dense fp32 model on the
in-domain test split and on each external test set, side by side (the report's shift section).

A drop is fp32 accuracy minus the model's, on the same images (> 0: the model is worse), with a paired
bootstrap CI over images. The excess is the external drop minus the in-domain drop, with a CI that
resamples both image sets; a model is flagged when that CI lies above 0: compression cost it more
accuracy away from the training data than on it. Agreement is the fraction of external images on which
the model's top-1 class is the dense fp32 model's. No TensorFlow.
"""
from __future__ import annotations

from . import stats
from .schema import external_name, in_domain, reference_model_key
from .view import ALPHA, N_BOOT, ResultView, fmt_p, fmt_pct, md_table, model_key

TITLE = "Does compression hurt generalization? External test sets"


def _pp(x) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.1f}"


def _pp_ci(v) -> str:
    return "n/a" if v is None else f"{_pp(v[0])} [{_pp(v[1])}, {_pp(v[2])}]"


def shift_rows(d: ResultView, rows) -> list[dict]:
    """One dict per (external set, model other than the dense fp32 reference) with both drops, the excess,
    agreement and McNemar against dense fp32 on the set, and `flagged`. `d` holds the in-domain rows,
    `rows` may hold anything (the external ones are used)."""
    ext: dict = {}
    for r in rows:
        name = external_name(r)
        if name is not None:
            ext.setdefault((name, model_key(r)), r)  # the first row of a model on a set (one per bench)
    out = []
    for name in sorted({s for s, _ in ext}):
        keys = [k for k in d.keys if (name, k) in ext] + sorted(
            {k for s, k in ext if s == name and k not in d.models}, key=str)
        for k in keys:
            ref_key = reference_model_key(k)
            if k == ref_key:
                continue
            row, ref_row = ext[(name, k)], ext.get((name, ref_key))
            m, ref = d.models.get(k), d.models.get(ref_key)
            c, rc = stats.correct_array(row.get("correct")), stats.correct_array((ref_row or {}).get("correct"))
            paired_ext = c is not None and rc is not None and c.shape == rc.shape
            paired_in = m is not None and ref is not None and m.correct is not None and ref.correct is not None \
                and m.correct.shape == ref.correct.shape
            drop_in = stats.paired_drop_ci(ref.correct, m.correct, N_BOOT, ALPHA) if paired_in else None
            drop_ext = stats.paired_drop_ci(rc, c, N_BOOT, ALPHA) if paired_ext else None
            excess = stats.drop_excess_ci(ref.correct, m.correct, rc, c, N_BOOT, ALPHA) \
                if paired_in and paired_ext else None
            out.append({
                "set": name, "key": k, "n": None if c is None else int(c.size),
                "accuracy_in": None if m is None else m.accuracy,
                "fp32_accuracy_in": None if ref is None else ref.accuracy,
                "accuracy_ext": row.get("accuracy"), "fp32_accuracy_ext": (ref_row or {}).get("accuracy"),
                "drop_in": drop_in, "drop_ext": drop_ext, "excess": excess,
                "agreement": stats.agreement(row.get("predicted"), (ref_row or {}).get("predicted")),
                "mcnemar": stats.mcnemar(rc, c) if paired_ext else None,
                "flagged": bool(excess and excess[1] > 0),
            })
    return out


def section_shift(d: ResultView, rows, heading: str = f"## {TITLE}") -> str:
    """The report's section: one table answering the study's question, and one line saying the answer."""
    out = [heading, ""]
    if not any(not in_domain(r) for r in rows):
        out.append("No external test sets in these results: name some with `data.external` in the study config or "
                   "`gram-tf bench MODELS --external NAME=DIR` (docs/generalization.md).")
        return "\n".join(out)
    table = shift_rows(d, rows)
    out.append(
        "Each model against the dense fp32 LiteRT model of its backbone on the same images. Drop = fp32 accuracy − "
        "this model's, in percentage points (> 0: the model is worse), on the in-domain test split and on the "
        f"external set, each with a paired 95% bootstrap CI over images ({N_BOOT} resamples). External − in-domain "
        "is the difference of the two drops (CI resampling both sets); **flagged** when that CI lies above 0: "
        "compression cost this model more accuracy away from its training data than on it. Agreement = share of "
        "the set's images given the fp32 model's top-1 class; McNemar p against fp32 on the set (unadjusted)."
    )
    out.append("")
    multi = d.multi_run
    hdr = (["run"] if multi else []) + [
        "external set", "backbone", "sparsity", "variant", "runtime", "n", "accuracy on set (fp32)",
        "in-domain drop (pp) [95% CI]", "external drop (pp) [95% CI]", "external − in-domain (pp) [95% CI]",
        "agreement with fp32", "McNemar p vs fp32", "flag"]
    body = []
    for t in table:
        run, bb, sp, var, rt = t["key"]
        acc = f"{fmt_pct(t['accuracy_ext'])} ({fmt_pct(t['fp32_accuracy_ext'])})"
        body.append(([run] if multi else []) + [
            t["set"], bb, f"{sp:g}", var, rt, t["n"] if t["n"] is not None else "n/a", acc,
            _pp_ci(t["drop_in"]), _pp_ci(t["drop_ext"]), _pp_ci(t["excess"]),
            "n/a" if t["agreement"] is None else f"{100.0 * t['agreement']:.1f}%",
            fmt_p(t["mcnemar"]["p_value"]) if t["mcnemar"] else "n/a",
            "**worse off-domain**" if t["flagged"] else "",
        ])
    out.append(md_table(hdr, body) if body else "No model besides the dense fp32 reference has external rows.")
    out.append("")
    flagged = [t for t in table if t["flagged"]]
    if flagged:
        names = ", ".join(f"{d.label(t['key'])} on {t['set']}" for t in flagged)
        out.append(f"**Answer: yes, for {len(flagged)} of {len(table)}**: {names} lost more accuracy on the external "
                   "set than on the test split, beyond the 95% CI.")
    else:
        out.append(f"**Answer: not measurably here**: none of the {len(table)} model-and-set pairs lost more accuracy "
                   "on an external set than on the test split beyond the 95% CI (a small set has wide CIs: read "
                   "the intervals, not only the flag).")
    return "\n".join(out)
