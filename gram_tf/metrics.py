"""Classification metrics in plain numpy (used by training, conversion, benchmarking, reports, and the
deploy wing's temperature): accuracy and friends, confidence calibration (ECE, Brier, NLL), temperature
scaling and the accuracy-coverage curve of selective prediction (docs/generalization.md)."""
from __future__ import annotations

import numpy as np

# Tolerance for float round-off in "accuracy >= fp32 accuracy - max_drop" (0.9 - 0.01 != 0.89).
_ACC_EPS = 1e-9


def within_drop(reference: float, accuracy: float, max_drop: float) -> bool:
    """accuracy >= reference - max_drop, with round-off tolerance: 2 of 200 images lost is 1 pp."""
    return reference - accuracy <= max_drop + _ACC_EPS


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC via the Mann-Whitney U statistic (ties get half credit)."""
    pos, neg = score[y == 1], score[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), dtype=np.float64)
    values = np.concatenate([pos, neg])[order]
    # average ranks for ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum = ranks[: len(pos)].sum()
    return float((rank_sum - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def roc_auc(y_true, probs) -> float | None:
    """Binary: AUC of the positive-class probability; multiclass: macro one-vs-rest."""
    y = np.asarray(y_true, int)
    probs = np.asarray(probs, np.float64)
    if probs.shape[1] == 2:
        return _binary_auc(y, probs[:, 1])
    aucs = [_binary_auc((y == k).astype(int), probs[:, k]) for k in range(probs.shape[1])]
    aucs = [a for a in aucs if a is not None]
    return float(np.mean(aucs)) if aucs else None


# The scalar metrics a run records per split (run.json) and `gram-tf train` prints, in that order.
SUMMARY = ("n", "accuracy", "loss", "f1_macro", "auc")

# ------------------------------------------------------------------------------------- calibration
# 15 equal-width bins: the choice of Guo et al. (2017) that most published ECEs use, so ours compare;
# the equal-mass (adaptive) variant is reported beside it because over-confident models put nearly
# every image in the top bin, where equal widths hide the miscalibration the other bins would show.
ECE_BINS = 15
_PROB_EPS = 1e-7  # the probability floor of the NLL (the `loss` column): one image costs at most 16.1 nats
_LOG_EPS = 1e-12  # the floor before log() when probabilities become logits for a temperature
TEMPERATURE_RANGE = (0.05, 20.0)  # the fit's bounds: beyond them a model is degenerate, not miscalibrated


def _top(probs) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, np.float64)
    return probs.max(axis=1), probs.argmax(axis=1)


def reliability_bins(confidence, correct, n_bins: int = ECE_BINS, adaptive: bool = False) -> list[dict]:
    """The non-empty bins of a reliability diagram: [{"n", "confidence" (mean), "accuracy", "lo", "hi"}].

    Equal-width bins (lo, hi] over [0, 1] (a confidence of 0 goes in the first), or with `adaptive`
    up to `n_bins` bins of (nearly) equal counts: right-closed at the confidences of every n/n_bins-th
    image in score order, so images with equal scores always share a bin."""
    conf = np.asarray(confidence, np.float64).reshape(-1)
    ok = np.asarray(correct, np.float64).reshape(-1)
    if conf.size == 0:
        return []
    if adaptive:
        ranked = np.sort(conf)
        cuts = np.ceil(np.arange(1, n_bins) * conf.size / n_bins).astype(int) - 1
        edges = np.unique(ranked[np.clip(cuts, 0, conf.size - 1)])
        idx = np.searchsorted(edges, conf, side="left")
    else:  # 1e-9: a score on an edge (k / n_bins) stays in the lower bin despite round-off in the product
        idx = np.clip(np.ceil(conf * n_bins - 1e-9).astype(int) - 1, 0, n_bins - 1)
    groups = [np.flatnonzero(idx == b) for b in range(int(idx.max()) + 1)]
    out = []
    for g in groups:
        if g.size:
            out.append({"n": int(g.size), "confidence": float(conf[g].mean()), "accuracy": float(ok[g].mean()),
                        "lo": float(conf[g].min()), "hi": float(conf[g].max())})
    return out


def ece_of(confidence, correct, n_bins: int = ECE_BINS, adaptive: bool = False) -> float | None:
    """Expected calibration error: sum over bins of (bin share) x |accuracy - mean confidence|."""
    bins = reliability_bins(confidence, correct, n_bins, adaptive)
    n = sum(b["n"] for b in bins)
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / n) if n else None


def expected_calibration_error(y_true, probs, n_bins: int = ECE_BINS, adaptive: bool = False) -> float | None:
    """ECE of the top-1 prediction (its probability against whether it was right)."""
    y = np.asarray(y_true, int)
    if y.size == 0:
        return None
    conf, pred = _top(probs)
    return ece_of(conf, pred == y, n_bins, adaptive)


def brier_score(y_true, probs) -> float | None:
    """Mean over images of the squared distance between the probability vector and the one-hot truth
    (Brier's original sum over classes: 0 is perfect, 2 the worst)."""
    y = np.asarray(y_true, int)
    if y.size == 0:
        return None
    probs = np.asarray(probs, np.float64)
    onehot = np.zeros_like(probs)
    onehot[np.arange(y.size), y] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def nll(y_true, probs) -> float | None:
    """Mean negative log-likelihood of the true class (natural log; probabilities floored at 1e-7)."""
    y = np.asarray(y_true, int)
    if y.size == 0:
        return None
    probs = np.asarray(probs, np.float64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(y.size), y], _PROB_EPS, 1.0))))


def apply_temperature(probs, temperature):
    """softmax(log(p) / T): the probabilities a model would give with its logits divided by T (log p is
    the logits up to a per-image constant, which softmax cancels). The top-1 class never changes; T > 1
    softens the scores, T < 1 sharpens them. T of None or 1 returns the input unchanged."""
    if temperature is None or temperature == 1.0:
        return probs
    p = np.asarray(probs, np.float64)
    z = np.log(np.clip(p, _LOG_EPS, None)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.asarray(probs).dtype)


def fit_temperature(y_true, probs) -> float | None:
    """The T in TEMPERATURE_RANGE that minimises the NLL of apply_temperature(probs, T) (golden-section
    search on log T: the NLL is convex in 1/T, so it has one minimum there). None without images.

    With no error among the images the NLL keeps falling as T -> 0 (every right answer can be made
    more certain), which says nothing about new images: then T = 1, the scores as they are."""
    y = np.asarray(y_true, int)
    if y.size == 0:
        return None
    p = np.asarray(probs, np.float64)
    if (p.argmax(axis=1) == y).all():
        return 1.0
    logp = np.log(np.clip(p, _LOG_EPS, None))

    def loss(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(y.size), y]))

    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    g = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(80):  # the bracket shrinks 0.618x per step: 80 steps are far below float precision in T
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    best = min((loss(lo), lo), (loss(hi), hi), (fa, a), (fb, b))[1]  # a minimum at a bound stays there
    return float(np.exp(best))


def calibration_metrics(y_true, probs, suffix: str = "") -> dict:
    """ece, ece_adaptive, brier (and nll) of the top-1 probabilities, the keys ending in `suffix`."""
    return {f"ece{suffix}": expected_calibration_error(y_true, probs),
            f"ece_adaptive{suffix}": expected_calibration_error(y_true, probs, adaptive=True),
            f"brier{suffix}": brier_score(y_true, probs), f"nll{suffix}": nll(y_true, probs)}


# ---------------------------------------------------------------------------- selective prediction
# What a prediction row says instead of a label when its top score is below `--min-confidence`.
REFER = "refer to a human"
_SCORE_DIGITS = 4  # per-image scores in result rows: 0.9996 and 0.9999 stay apart, where thresholds live


def format_scores(scores) -> str | None:
    """Per-image top scores as one compact cell: ';'-joined, 4 decimals, trailing zeros dropped."""
    cells = [f"{float(s):.{_SCORE_DIGITS}f}".rstrip("0").rstrip(".") for s in np.asarray(scores).reshape(-1)]
    return ";".join(cells) or None


def parse_scores(text) -> np.ndarray | None:
    """format_scores' cell back to a float array; None for an empty cell; ValueError for anything
    that is not ';'-separated numbers in [0, 1]."""
    if text is None or not str(text).strip():
        return None
    try:
        x = np.array([float(v) for v in str(text).split(";")], np.float64)
    except ValueError:
        raise ValueError(f"per-image scores must be ';'-separated numbers, got {str(text)[:30]!r}") from None
    if not np.isfinite(x).all() or (x < 0).any() or (x > 1).any():
        raise ValueError(f"per-image scores must lie in [0, 1], got {str(text)[:30]!r}")
    return x


def accuracy_coverage(confidence, correct) -> list[tuple[float, float, float]]:
    """The accuracy-coverage curve: [(threshold, coverage, accuracy)] for every distinct score, highest
    first, where the images kept are those whose top score is >= threshold, coverage is the fraction
    kept and accuracy is measured on them. Images with equal scores are kept or referred together."""
    conf = np.asarray(confidence, np.float64).reshape(-1)
    ok = np.asarray(correct, np.float64).reshape(-1)
    if conf.size == 0:
        return []
    if conf.size != ok.size:
        raise ValueError(f"{conf.size} scores but {ok.size} correctness values")
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    hits = np.cumsum(ok)
    last = np.flatnonzero(np.append(conf[1:] != conf[:-1], True))  # the last image of each distinct score
    return [(float(conf[i]), (i + 1) / conf.size, float(hits[i] / (i + 1))) for i in last]


def coverage_at_accuracy(confidence, correct, target: float) -> tuple[float | None, float | None]:
    """(coverage, threshold): the largest fraction of images that can be kept, by a threshold on the top
    score, with accuracy >= target on those kept; (None, None) when no threshold reaches it."""
    best = (None, None)
    for threshold, coverage, accuracy in accuracy_coverage(confidence, correct):
        if accuracy >= target - _ACC_EPS and (best[0] is None or coverage > best[0]):
            best = (coverage, threshold)
    return best


def classification_metrics(y_true, probs, labels, temperature: float | None = None) -> dict:
    """accuracy, loss (= NLL), macro F1, per-class precision/recall, ROC AUC, the confusion matrix, the
    per-image `correct` and top score (`confidence`), and calibration (ece, ece_adaptive, brier). With a
    `temperature`, the same calibration after it (the `_ts` keys) and `confidence_ts`, the scores
    `gram-tf predict` shows by default."""
    y = np.asarray(y_true, int)
    probs = np.asarray(probs, np.float64)
    n_classes = len(labels)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, n_classes)
    per_class = {}
    f1s = []
    for k, name in enumerate(labels):
        tp = cm[k, k]
        fp = cm[:, k].sum() - tp
        fn = cm[k, :].sum() - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_class[name] = {"precision": float(precision), "recall": float(recall),
                           "f1": float(f1), "support": int(cm[k, :].sum())}
    calib = calibration_metrics(y, probs)
    out = {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "loss": calib.pop("nll"),
        "f1_macro": float(np.mean(f1s)) if len(y) else None,
        "auc": roc_auc(y, probs) if len(y) else None,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "labels": list(labels),
        "correct": "".join("1" if p == t else "0" for p, t in zip(pred, y)),
        "confidence": format_scores(probs.max(axis=1)) if len(y) else None,
        **calib,
    }
    if temperature is not None:
        scaled = apply_temperature(probs, temperature)
        out.update(temperature=float(temperature), **calibration_metrics(y, scaled, "_ts"),
                   confidence_ts=format_scores(scaled.max(axis=1)) if len(y) else None)
    return out
