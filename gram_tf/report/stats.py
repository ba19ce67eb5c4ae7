"""Statistics for comparing model variants: bootstrap CIs, McNemar, Friedman/Nemenyi, Pareto, auto-pick.

Pure functions on numpy arrays and plain result-row dicts (as returned by
`gram_tf.report.load_results`); no TensorFlow, no plotting, no file I/O.

Conventions
-----------
* A per-image correctness vector is a 1-D bool array (or anything `np.asarray(..., bool)` accepts,
  including a '0'/'1' string via `correct_array`), in the fixed test-set order shared by every row
  of one run.
* Higher score = better. In rankings the best model gets rank 1; ties share the average rank.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import stats as _st

from ..config import AUTO_ON, BenchConfig
from ..metrics import within_drop
from .schema import external_name, in_domain, is_reference, reference_key, to_float

__all__ = [
    "correct_array",
    "bootstrap_ci",
    "mcnemar",
    "friedman_skip_reason",
    "friedman_nemenyi",
    "nemenyi_cd",
    "pareto_front",
    "select_auto",
    "auto_choices",
    "paired_drop_ci",
    "drop_excess_ci",
    "agreement",
    "predicted_array",
    "tied",
    "latency_interval",
    "noise_warning",
    "reference_key",
    "EXACT_MCNEMAR_BELOW",
    "within_drop",
]

# McNemar: exact binomial test when the number of discordant pairs b + c is below this.
EXACT_MCNEMAR_BELOW = 25

def correct_array(correct) -> np.ndarray | None:
    """Turn a `correct` field ('0'/'1' string, sequence of bools/ints, array) into a bool array.

    Returns None for None / empty input. Raises ValueError for characters other than '0' and '1'.
    """
    if correct is None:
        return None
    if isinstance(correct, str):
        s = correct.strip()
        if not s:
            return None
        if set(s) - {"0", "1"}:
            raise ValueError(f"correct string may only contain '0' and '1', got {s[:20]!r}...")
        return np.frombuffer(s.encode("ascii"), dtype=np.uint8) == ord("1")
    arr = np.asarray(correct)
    if arr.size == 0:
        return None
    return arr.astype(bool).ravel()


def bootstrap_ci(correct, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap (1 - alpha) confidence interval of accuracy = mean(correct).

    Resampling n images with replacement from a set with k correct ones gives a number of correct
    images distributed exactly Binomial(n, k/n), so each bootstrap replicate is drawn from that
    binomial directly: the same distribution as index resampling, in O(n_boot) time and memory.
    Deterministic for a given seed.
    """
    arr = correct_array(correct)
    if arr is None:
        raise ValueError("bootstrap_ci needs at least one test image")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = arr.size
    p_hat = float(arr.mean())
    rng = np.random.default_rng(seed)
    boot = rng.binomial(n, p_hat, size=n_boot) / n
    lo, hi = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _discordant(ref, other) -> tuple[int, int, int]:
    """(n, b, c): images, those the reference got right and `other` wrong, and the reverse."""
    a, o = correct_array(ref), correct_array(other)
    if a is None or o is None or a.shape != o.shape:
        raise ValueError("paired correctness vectors of equal, non-zero length are needed")
    return int(a.size), int(np.count_nonzero(a & ~o)), int(np.count_nonzero(~a & o))


def _drop_draws(ref, other, n_boot: int, rng) -> tuple[float, np.ndarray]:
    """The accuracy drop ref - other and `n_boot` bootstrap replicates of it, resampling images (paired).
    Only b and c move the difference, so a resample of n images is Multinomial(n, [b, c, rest] / n)
    (O(n_boot), like bootstrap_ci)."""
    n, b, c = _discordant(ref, other)
    draws = rng.multinomial(n, [b / n, c / n, (n - b - c) / n], size=n_boot)
    return (b - c) / n, (draws[:, 0] - draws[:, 1]) / n


def paired_drop_ci(ref_correct, correct, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple:
    """(drop, low, high): accuracy of the reference minus this model's on the same images (> 0: this model
    is worse), with its percentile-bootstrap (1 - alpha) CI over images, paired. Deterministic per seed."""
    drop, boot = _drop_draws(ref_correct, correct, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(drop), float(lo), float(hi)


def drop_excess_ci(ref_in, model_in, ref_ext, model_ext, n_boot: int = 2000, alpha: float = 0.05,
                   seed: int = 0) -> tuple:
    """(excess, low, high): the external drop minus the in-domain drop (each paired with its reference), with
    a bootstrap CI that resamples the two image sets independently (they are different images). A low bound
    above 0 says compression cost more accuracy on the external set than on the test split."""
    rng = np.random.default_rng(seed)
    d_in, b_in = _drop_draws(ref_in, model_in, n_boot, rng)
    d_ext, b_ext = _drop_draws(ref_ext, model_ext, n_boot, rng)
    lo, hi = np.quantile(b_ext - b_in, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(d_ext - d_in), float(lo), float(hi)


def predicted_array(predicted) -> np.ndarray | None:
    """A `predicted` field (';'-separated class indices) as an int array; None when absent."""
    if predicted is None or (isinstance(predicted, str) and not predicted.strip()):
        return None
    if isinstance(predicted, str):
        return np.array([int(v) for v in predicted.split(";")], dtype=np.int64)
    return np.asarray(predicted, dtype=np.int64).ravel()


def agreement(predicted_a, predicted_b) -> float | None:
    """Fraction of images on which two models give the same top-1 class (None without both, or unpaired)."""
    a, b = predicted_array(predicted_a), predicted_array(predicted_b)
    if a is None or b is None or a.shape != b.shape:
        return None
    return float(np.mean(a == b))


def mcnemar(correct_a, correct_b) -> dict:
    """Paired McNemar test of two classifiers on the same test images.

    b = images A got right and B got wrong, c = images A got wrong and B got right.
    * b + c == 0: no discordant pairs -> statistic 0, p 1.0 (method "none").
    * b + c < 25: exact two-sided binomial test, p = min(1, 2 * P[X <= min(b, c)]),
      X ~ Binomial(b + c, 0.5); statistic = min(b, c) (method "exact-binomial").
    * otherwise: chi-square with continuity correction, statistic = (|b - c| - 1)^2 / (b + c),
      1 degree of freedom (method "chi2-cc").
    """
    a = correct_array(correct_a)
    b_arr = correct_array(correct_b)
    if a is None or b_arr is None:
        raise ValueError("mcnemar needs two non-empty correctness vectors")
    if a.shape != b_arr.shape:
        raise ValueError(f"mcnemar needs paired vectors of equal length, got {a.size} and {b_arr.size}")
    b = int(np.count_nonzero(a & ~b_arr))
    c = int(np.count_nonzero(~a & b_arr))
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p_value": 1.0, "method": "none"}
    if n < EXACT_MCNEMAR_BELOW:
        k = min(b, c)
        p = min(1.0, 2.0 * float(_st.binom.cdf(k, n, 0.5)))
        return {"b": b, "c": c, "statistic": float(k), "p_value": p, "method": "exact-binomial"}
    stat = (abs(b - c) - 1.0) ** 2 / n
    p = float(_st.chi2.sf(stat, 1))
    return {"b": b, "c": c, "statistic": float(stat), "p_value": p, "method": "chi2-cc"}


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> tuple[float, float]:
    """Nemenyi critical difference for k models over n_blocks blocks: returns (cd, q_alpha).

    q_alpha = studentized_range.ppf(1 - alpha, k, inf) / sqrt(2); CD = q_alpha * sqrt(k(k+1) / (6N)).
    """
    q = float(_st.studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)
    cd = q * math.sqrt(k * (k + 1) / (6.0 * n_blocks))
    return cd, q


def friedman_skip_reason(scores, names: Sequence[str]) -> str | None:
    """Why `friedman_nemenyi` cannot run on these inputs (a sentence), or None if it can."""
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 2:
        return f"the score matrix must be 2-D (blocks x models), got shape {arr.shape}"
    n, k = arr.shape
    if len(names) != k:
        return f"{len(names)} names for {k} model columns"
    if k < 3:
        return f"the Friedman test needs at least 3 models, got {k}"
    if n < 2:
        return f"the Friedman test needs at least 2 blocks, got {n}"
    if not np.all(np.isfinite(arr)):
        return "the score matrix has missing (non-finite) values"
    return None


def friedman_nemenyi(scores, names: Sequence[str], alpha: float = 0.05) -> dict | None:
    """Friedman test over k models in N blocks, then Nemenyi post-hoc ranking.

    Blocks used by gram_tf.report: (a) the test images - score 1/0 = the model got the image right -
    to rank all models of a run (images are independent samples; bootstrap resamples are not, and
    their arbitrary count would shrink the CD at will, so they are not used); (b) with >= 3
    backbones, the configurations (sparsity, variant, runtime) shared by all backbones, score =
    accuracy, to rank the backbones.

    scores: array [N blocks, k models]; higher = better; in each block the best model gets rank 1
    (ties share the average rank). Returns None when the test cannot run (< 3 models, < 2 blocks,
    missing values); `friedman_skip_reason` gives the sentence why.

    Returned dict:
      statistic, p_value  - scipy.stats.friedmanchisquare (tie-corrected). If every block is one
                            big tie the statistic is undefined; we report 0.0 and p 1.0.
      avg_ranks           - {name: average rank}, lower = better
      order               - names sorted best first
      cd, q_alpha         - Nemenyi critical difference and the studentized-range quantile / sqrt 2
      pairwise            - [{a, b, rank_diff, significant}] for every pair (|diff| > cd)
      groups              - maximal runs of models (in rank order) whose ranks lie within cd of each
                            other: the bars of a CD diagram; models in no common group differ
      n_blocks, k, alpha, all_tied
    """
    reason = friedman_skip_reason(scores, names)
    if reason is not None:
        return None
    arr = np.asarray(scores, dtype=float)
    n, k = arr.shape
    names = [str(x) for x in names]
    ranks = _st.rankdata(-arr, axis=1)  # best (highest) score -> rank 1
    avg = ranks.mean(axis=0)
    all_tied = bool(np.all(arr == arr[:, :1]))
    if all_tied:
        statistic, p_value = 0.0, 1.0
    else:
        res = _st.friedmanchisquare(*[arr[:, j] for j in range(k)])
        statistic, p_value = float(res.statistic), float(res.pvalue)
        if not math.isfinite(statistic):  # defensive: degenerate tie structure
            statistic, p_value = 0.0, 1.0
    cd, q = nemenyi_cd(k, n, alpha)
    avg_ranks = {nm: float(r) for nm, r in zip(names, avg)}
    order_idx = sorted(range(k), key=lambda j: (avg[j], j))
    order = [names[j] for j in order_idx]
    pairwise = []
    for i in range(k):
        for j in range(i + 1, k):
            d = float(abs(avg[i] - avg[j]))
            pairwise.append({"a": names[i], "b": names[j], "rank_diff": d, "significant": d > cd})
    # CD-diagram groups: for each start position, the longest run whose rank span is <= cd;
    # keep the runs not contained in an earlier (longer-reaching) one.
    groups: list[list[str]] = []
    last_end = -1
    sorted_r = [avg[j] for j in order_idx]
    for s in range(k):
        e = s
        while e + 1 < k and sorted_r[e + 1] - sorted_r[s] <= cd + 1e-12:
            e += 1
        if e > last_end:
            groups.append(order[s : e + 1])
            last_end = e
    return {
        "statistic": statistic,
        "p_value": p_value,
        "avg_ranks": avg_ranks,
        "order": order,
        "cd": float(cd),
        "q_alpha": float(q),
        "pairwise": pairwise,
        "groups": groups,
        "n_blocks": int(n),
        "k": int(k),
        "alpha": float(alpha),
        "all_tied": all_tied,
    }


def pareto_front(points: Iterable) -> list[bool]:
    """Flag the non-dominated (latency, accuracy) points: minimise latency, maximise accuracy.

    A point is dominated if another has latency <= and accuracy >= with at least one strict.
    Identical points do not dominate each other (both stay on the front). Points with a None or
    non-finite coordinate are never on the front and never dominate.
    """
    pts = list(points)
    ok = []
    for p in pts:
        try:
            lat, acc = float(p[0]), float(p[1])
            ok.append((lat, acc) if math.isfinite(lat) and math.isfinite(acc) else None)
        except (TypeError, ValueError, IndexError):
            ok.append(None)
    flags = []
    for i, p in enumerate(ok):
        if p is None:
            flags.append(False)
            continue
        dominated = False
        for j, q in enumerate(ok):
            if j == i or q is None:
                continue
            if q[0] <= p[0] and q[1] >= p[1] and (q[0] < p[0] or q[1] > p[1]):
                dominated = True
                break
        flags.append(not dominated)
    return flags


# --------------------------------------------------------------------------- row helpers


def latency_interval(row) -> tuple | None:
    """(low, high) of a row's p50 latency: its 95 % CI when it was timed in rounds, else None (an
    imported device log, an old row: a point, never used to call a tie)."""
    lo, hi = to_float(row.get("latency_ms_ci_low")), to_float(row.get("latency_ms_ci_high"))
    return (lo, hi) if lo is not None and hi is not None and lo <= hi else None


def tied(a, b) -> bool:
    """Two rows' latencies are tied within noise when both have CIs and the CIs overlap."""
    ia, ib = latency_interval(a), latency_interval(b)
    return ia is not None and ib is not None and ia[0] <= ib[1] and ib[0] <= ia[1]


def noisy(rows, max_noise_pct: float) -> list:
    """(device, threads, noise_pct) of every timing whose measured noise exceeds `max_noise_pct`."""
    seen = {}
    for r in rows:
        noise = to_float(r.get("noise_pct"))
        if noise is not None and noise > max_noise_pct:
            key = (r.get("device"), r.get("threads"))
            seen[key] = max(noise, seen.get(key, 0.0))
    return [(dev, t, n) for (dev, t), n in seen.items()]


ADVICE = "re-run on a quiet machine or with more rounds"


def noise_warning(rows, max_noise_pct: float, max_busy_cores: float = BenchConfig.max_busy_cores) -> str | None:
    """One line for a benchmark whose fp32 round-to-round spread exceeds `max_noise_pct`, or while
    which other processes kept more than `max_busy_cores` cores busy; else None."""
    problems = noise_problems(rows, max_noise_pct, max_busy_cores)
    return "; ".join(problems) + f": latency conclusions are unreliable; {ADVICE}" if problems else None


def noise_problems(rows, max_noise_pct: float, max_busy_cores: float = BenchConfig.max_busy_cores) -> list:
    """What makes a benchmark's latencies unreliable, one phrase per problem (see `noise_warning`)."""
    problems = []
    bad = noisy(rows, max_noise_pct)
    if bad:
        worst = max(n for _, _, n in bad)
        where = ", ".join(sorted({f"{t} thread(s)" for _, t, _ in bad}))
        problems.append(f"timing noise {worst:.0f} % (fp32 round-to-round spread at {where}) exceeds "
                        f"{max_noise_pct:g} %")
    busy = [b for b in (to_float(r.get("busy_cores")) for r in rows) if b is not None]
    if busy and max(busy) > max_busy_cores:
        problems.append(f"other processes kept {max(busy):.1f} cores busy while timing (limit {max_busy_cores:g})")
    return problems


def select_auto(rows, max_drop: float = 0.01, auto_on: str = AUTO_ON[0]) -> dict:
    """{(run, backbone, threads): the chosen row} (see `auto_choices`)."""
    return {k: v["choice"] for k, v in auto_choices(rows, max_drop, auto_on).items()}


def _model(r) -> tuple:
    """(run, backbone, sparsity, variant, runtime): the rows of one model, timed or on any set."""
    s = to_float(r.get("sparsity_target"))
    return (r.get("run"), r.get("backbone"), 0.0 if s is None else s, r.get("variant"), r.get("runtime"))


def external_accuracies(rows) -> dict:
    """{model key: {external set: accuracy}} from the rows of external test sets (any device)."""
    out: dict = {}
    for r in rows:
        name, acc = external_name(r), to_float(r.get("accuracy"))
        if name is not None and acc is not None:
            out.setdefault(_model(r), {})[name] = acc
    return out


def auto_sets(rows, auto_on: str = AUTO_ON[0]) -> list:
    """The sets whose accuracy `auto` keeps within budget: None stands for the in-domain split. `external`
    without any external rows falls back to the in-domain split (an empty check would accept anything)."""
    if auto_on not in AUTO_ON:
        raise ValueError(f"auto_on must be one of {', '.join(AUTO_ON)}, got {auto_on!r}")
    names = sorted({n for n in map(external_name, rows) if n is not None})
    if auto_on == "in_domain" or not names:
        return [None]
    return names if auto_on == "external" else [None, *names]


def auto_choices(rows, max_drop: float = 0.01, auto_on: str = AUTO_ON[0]) -> dict:
    """Pick, per (run, backbone, threads), the fastest acceptable LiteRT model; among models tied
    with the fastest within noise, the smallest artifact.

    Reference: the row with variant "fp32", sparsity_target 0 (None counts as 0), runtime "litert"
    in the same (run, backbone, threads) group, with a known accuracy; groups without one are
    skipped. Candidates: LiteRT rows of the group (any variant, any sparsity, the reference
    included) with known accuracy and latency_ms_p50 whose accuracy is >= the reference's - max_drop
    (absolute; 0.01 = 1 percentage point; float round-off tolerated) on every set `auto_on` names
    (`auto_sets`: the in-domain split, every external test set, or both; a candidate without a row on a
    set the reference has is not acceptable). Only in-domain rows are timed, so only they are grouped
    and picked; external rows only answer "within budget there?". The fastest is the lowest
    latency_ms_p50; every candidate `tied` with it (latency CIs overlap) is as fast as far as the
    measurement can tell, and among those the smallest size_bytes wins, then the smallest zip_bytes
    (a pruned file), then the more accurate, then the lower p50. Without CIs (imported logs, old rows) this is the lowest p50.

    Returns {(run, backbone, threads): {"choice": row, "fastest": row, "tied": [rows tied with the
    fastest, the fastest included]}} (the row dicts themselves).
    """
    sets = auto_sets(rows, auto_on)
    ext = external_accuracies(rows) if sets != [None] else {}
    groups: dict[tuple, list] = {}
    for r in rows:
        if in_domain(r):
            groups.setdefault(reference_key(r), []).append(r)
    out = {}
    for key, grp in groups.items():
        refs = [r for r in grp if is_reference(r) and to_float(r.get("accuracy")) is not None]
        if not refs:
            continue
        ref_acc = max(to_float(r.get("accuracy")) for r in refs)
        ref_ext = ext.get(_model(refs[0]), {})

        def acceptable(r) -> bool:
            for name in sets:
                if name is None:
                    if not within_drop(ref_acc, to_float(r.get("accuracy")), max_drop):
                        return False
                elif name in ref_ext:
                    acc = ext.get(_model(r), {}).get(name)
                    if acc is None or not within_drop(ref_ext[name], acc, max_drop):
                        return False
            return True

        cands = [
            r
            for r in grp
            if str(r.get("runtime") or "") == "litert"
            and to_float(r.get("accuracy")) is not None
            and to_float(r.get("latency_ms_p50")) is not None
            and acceptable(r)
        ]
        if not cands:  # cannot happen while the reference has a latency; kept for robustness
            continue

        def size(r):
            v = to_float(r.get("size_bytes"))
            return math.inf if v is None else v

        def zipped(r):  # a pruned file is as large as its dense twin; it is smaller to ship (zip)
            v = to_float(r.get("zip_bytes"))
            return math.inf if v is None else v

        fastest = min(cands, key=lambda r: (to_float(r.get("latency_ms_p50")), -to_float(r.get("accuracy")), size(r)))
        ties = [r for r in cands if r is fastest or tied(r, fastest)]
        choice = min(ties, key=lambda r: (size(r), zipped(r), -to_float(r.get("accuracy")),
                                          to_float(r.get("latency_ms_p50"))))
        out[key] = {"choice": choice, "fastest": fastest, "tied": ties}
    return out
