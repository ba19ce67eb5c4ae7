"""The report's calibration and selective-prediction sections (docs/generalization.md), drawn from the
rows' calibration columns and per-image scores (`confidence`, `confidence_ts`, `correct`)."""
from __future__ import annotations

from pathlib import Path

from ..metrics import ECE_BINS, accuracy_coverage, coverage_at_accuracy, parse_scores
from .plots import plot_accuracy_coverage, plot_reliability
from .schema import in_domain, is_reference, to_float
from .view import PLOT_FILES, ResultView, fmt_num, fmt_pct, md_table

RELIABILITY_PNG, COVERAGE_PNG = PLOT_FILES[3:5]


def _scores(m, col: str):
    """A model's per-image scores in `col` as an array matching its `correct`, else None."""
    s = parse_scores(m.first(col, conv=lambda v: v if isinstance(v, str) and v.strip() else None))
    return s if s is not None and m.correct is not None and s.size == m.correct.size else None


def deployed_scores(m):
    """The scores `gram-tf predict` shows by default: after the temperature when the row has them."""
    s = _scores(m, "confidence_ts")
    return s if s is not None else _scores(m, "confidence")


def in_domain_reference_accuracy(d: ResultView, key) -> float | None:
    """The dense fp32 LiteRT model's accuracy on the run's own test split (an in-domain row)."""
    for r in d.rows:
        if (is_reference(r) and r.get("run") == key[0] and r.get("backbone") == key[1] and in_domain(r)
                and to_float(r.get("accuracy")) is not None):
            return to_float(r.get("accuracy"))
    return None


def _curve_label(key) -> str:
    """A curve's name inside its backbone's panel: variant, sparsity, runtime other than LiteRT."""
    _, _, sp, var, rt = key
    return f"{var}" + (f"@s{sp:g}" if sp else "") + (f" [{rt}]" if rt and rt != "litert" else "")


def _groups(d: ResultView) -> list:
    """[((run, backbone), [model keys])] in the report's order."""
    out: dict = {}
    for k in d.keys:
        out.setdefault((k[0], k[1]), []).append(k)
    return list(out.items())


def section_calibration(d: ResultView, out_dir: Path, plots: list, skipped: dict) -> str:
    out = ["## 8. Calibration", "",
           f"How far each artifact's scores can be trusted: expected calibration error (ECE, {ECE_BINS} equal-width "
           f"bins of the top score; adaptive = {ECE_BINS} equal-count bins), Brier score (sum over classes, 0 best) "
           "and negative log-likelihood (NLL = `loss`), before and after the run's temperature T (one scalar fitted "
           "on the validation split of the dense Keras model at convert time and stored in every artifact; "
           "`gram-tf predict` applies it unless `--no-temperature`). T never changes a label: accuracy is the "
           "same on both sides. Lower is better everywhere; ECE on a few dozen images is noisy (±several pp).", ""]
    hdr = (["run"] if d.multi_run else []) + [
        "backbone", "sparsity", "variant", "runtime", "ECE", "ECE adaptive", "Brier", "NLL", "T",
        "ECE after T", "ECE adaptive after T", "Brier after T", "NLL after T"]
    body = []
    for k in d.keys:
        m = d.models[k]
        vals = [m.first(c) for c in ("ece", "ece_adaptive", "brier", "loss", "temperature", "ece_ts",
                                     "ece_adaptive_ts", "brier_ts", "nll_ts")]
        if all(v is None for v in vals[:3]):
            continue
        run, bb, sp, var, rt = k
        body.append(([run] if d.multi_run else []) + [bb, f"{sp:g}", var, rt] + [
            fmt_num(v, 2 if i == 4 else 3) for i, v in enumerate(vals)])
    if not body:
        skipped[RELIABILITY_PNG] = "no calibration columns in these rows (benchmarked before gram_tf computed them)"
        return "\n".join(out + ["No row has calibration metrics (rows benchmarked before gram_tf computed them)."])
    out.append(md_table(hdr, body))
    curves = []
    for (run, bb), keys in _groups(d):
        before = [(_curve_label(k), _scores(d.models[k], "confidence"), d.models[k].correct) for k in keys]
        after = [(_curve_label(k), _scores(d.models[k], "confidence_ts"), d.models[k].correct) for k in keys]
        before, after = [c for c in before if c[1] is not None], [c for c in after if c[1] is not None]
        if before:
            curves.append((f"{bb}" + (f" ({run})" if d.multi_run else ""), before, after))
    if curves:
        p = Path(out_dir) / RELIABILITY_PNG
        plot_reliability(curves, p, ECE_BINS)
        plots.append(p)
        out += ["", f"![reliability]({RELIABILITY_PNG})", "",
                f"Reliability diagram per backbone ({ECE_BINS} equal-width bins; a point is a bin's mean top score vs "
                "its accuracy, on the diagonal = calibrated, below = over-confident); right: after the temperature."]
    else:
        skipped[RELIABILITY_PNG] = "no per-image scores (confidence) in these rows"
    return "\n".join(out)


def section_selective(d: ResultView, out_dir: Path, plots: list, skipped: dict, target: float | None) -> str:
    named = target is not None
    out = ["## 9. Selective prediction", "",
           "Refer the images a model is least sure of to a human: keeping only the images whose top score is at "
           "least a threshold trades coverage (the fraction kept) for accuracy on those kept. Per artifact, the "
           "largest coverage whose accuracy reaches the target"
           + (f" ({fmt_pct(target)}, `report.selective_target`)" if named else
              " (the dense fp32 model's in-domain accuracy of the same backbone; set `report.selective_target` "
              "to name another)")
           + ", on the scores `gram-tf predict` shows (after the temperature), and the threshold that gets it: "
           "`gram-tf predict --min-confidence THRESHOLD` refers the rest. Images with equal scores (4 decimals) "
           "are kept or referred together.", ""]
    hdr = (["run"] if d.multi_run else []) + [
        "backbone", "sparsity", "variant", "runtime", "accuracy (all images)", "target", "coverage at target",
        "threshold"]
    body, curves = [], {}
    for k in d.keys:
        m = d.models[k]
        scores = deployed_scores(m)
        if scores is None:
            continue
        goal = target if named else in_domain_reference_accuracy(d, k)
        cov, thr = coverage_at_accuracy(scores, m.correct, goal) if goal is not None else (None, None)
        curve = accuracy_coverage(scores, m.correct)
        run, bb, sp, var, rt = k
        body.append(([run] if d.multi_run else []) + [
            bb, f"{sp:g}", var, rt, fmt_pct(m.accuracy), fmt_pct(goal),
            "not reached" if goal is not None and cov is None else fmt_pct(cov),
            "n/a" if thr is None else f"{thr:g}"])
        curves.setdefault((k[0], k[1]), ([], goal))[0].append((_curve_label(k), curve))
    if not body:
        skipped[COVERAGE_PNG] = "no per-image scores (confidence) in these rows"
        return "\n".join(out + ["No row has per-image scores (rows benchmarked before gram_tf recorded them)."])
    out.append(md_table(hdr, body))
    p = Path(out_dir) / COVERAGE_PNG
    plot_accuracy_coverage([(f"{bb}" + (f" ({run})" if d.multi_run else ""), cs, goal)
                            for (run, bb), (cs, goal) in curves.items()], p)
    plots.append(p)
    out += ["", f"![accuracy vs coverage]({COVERAGE_PNG})", "",
            "Accuracy on the images kept vs the fraction kept, one curve per variant (dashed: the target)."]
    return "\n".join(out)


def calibration_sections(d: ResultView, out_dir, selective_target: float | None = None) -> tuple[str, list, dict]:
    """(Markdown of sections 8 and 9, the plots drawn, {plot: why not drawn})."""
    plots: list = []
    skipped: dict = {}
    text = "\n\n".join([section_calibration(d, Path(out_dir), plots, skipped),
                        section_selective(d, Path(out_dir), plots, skipped, selective_target)])
    return text, plots, skipped


