"""Result rows grouped into models (one per run/backbone/sparsity/variant/runtime, any thread
count), with the derived values the report's tables and plots share, and the formatting helpers."""
from __future__ import annotations

import math

from ..convert.variants import variant_names
from . import stats
from .schema import reference_model_key, sparsity_of, threads_of, to_float

N_BOOT = 2000
ALPHA = 0.05
# report order of variants: the variant table's order, then the Keras reference row
VARIANT_ORDER = [*variant_names(), "keras"]
PLOT_FILES = ("accuracy_vs_latency.png", "size_per_variant.png", "sparsity_vs_accuracy.png", "reliability.png",
              "accuracy_coverage.png")


def fmt_p(p) -> str:
    """p-value as printed in the report: 3 significant digits, scientific below 0.001."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p >= 1e-3:
        return f"{p:.3g}"
    return f"{p:.1e}"


def fmt_bytes(b) -> str:
    """Bytes as MB / KB (SI: 1 MB = 10^6 bytes)."""
    if b is None:
        return "n/a"
    b = float(b)
    if b >= 1e6:
        return f"{b / 1e6:.2f} MB"
    if b >= 1e3:
        return f"{b / 1e3:.1f} KB"
    return f"{b:.0f} B"


def fmt_pct(x) -> str:
    return "n/a" if x is None else f"{100.0 * x:.1f}%"


def fmt_ci(ci) -> str:
    return "n/a" if ci is None else f"[{100.0 * ci[0]:.1f}, {100.0 * ci[1]:.1f}]"


def fmt_num(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_ms(x) -> str:
    if x is None:
        return "n/a"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:.0f}"


def fmt_rate(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def fmt_x(x) -> str:
    return "n/a" if x is None else f"{x:.2f}×"


def fmt_ms_ci(row) -> str:
    """A row's p50 with its 95 % CI when it was timed in rounds: '0.52 [0.50, 0.55]'."""
    if row is None:
        return "n/a"
    p50 = to_float(row.get("latency_ms_p50"))
    lo, hi = to_float(row.get("latency_ms_ci_low")), to_float(row.get("latency_ms_ci_high"))
    return fmt_ms(p50) + (f" [{fmt_ms(lo)}, {fmt_ms(hi)}]" if lo is not None and hi is not None else "")


def fmt_x_ci(row, value=None) -> str:
    """A row's speed-up vs fp32 with its paired 95 % CI; '≈' marks a CI that contains 1 (tied with fp32
    within noise)."""
    x = value if value is not None or row is None else to_float(row.get("speedup_vs_fp32"))
    if x is None:
        return "n/a"
    lo, hi = (to_float(row.get("speedup_ci_low")), to_float(row.get("speedup_ci_high"))) if row is not None else (None, None)
    if lo is None or hi is None:
        return fmt_x(x)
    return ("≈" if lo <= 1.0 <= hi and lo < hi else "") + f"{fmt_x(x)} [{lo:.2f}, {hi:.2f}]"


def fmt_pp(x) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.1f}"


def fmt_sp(s) -> str:
    return f"{s:g}"


def md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(headers: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for r in body:
        lines.append("| " + " | ".join(md_cell(c) for c in r) + " |")
    return "\n".join(lines)




def model_key(row: dict) -> tuple:
    """(run, backbone, sparsity_target, variant, runtime): identifies one model (any thread count)."""
    return (row.get("run"), row.get("backbone"), sparsity_of(row), row.get("variant"), row.get("runtime"))


def variant_rank(v) -> tuple:
    v = "" if v is None else str(v)
    return (VARIANT_ORDER.index(v), "") if v in VARIANT_ORDER else (len(VARIANT_ORDER), v)


def _sort_key(key: tuple) -> tuple:
    run, bb, sp, var, rt = key
    return (str(run or ""), str(bb or ""), sp, variant_rank(var), 0 if rt == "litert" else 1, str(rt or ""))


def model_label(key: tuple, with_run: bool = False) -> str:
    run, bb, sp, var, rt = key
    s = f"{bb}/{var}"
    if sp:
        s += f"@s{fmt_sp(sp)}"
    if rt and rt != "litert":
        s += f" [{rt}]"
    if with_run:
        s = f"{run}:{s}"
    return s


class ModelRows:
    """All rows of one model (one per thread count) plus thread-independent derived values."""

    def __init__(self, key):
        self.key = key
        self.by_threads: dict = {}
        self.duplicates = 0

    def add(self, row):
        t = threads_of(row)
        if t in self.by_threads:
            self.duplicates += 1
            return
        self.by_threads[t] = row

    def finalize(self):
        ts = [t for t in self.by_threads if t is not None]
        if 1 in self.by_threads:
            self.head_t = 1
        elif ts:
            self.head_t = min(ts)
        else:
            self.head_t = next(iter(self.by_threads))
        self.head = self.by_threads[self.head_t]
        # Thread-independent values: take the headline row's, else the first row that has one.
        ordered = [self.head] + [r for t, r in sorted(self.by_threads.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)) if r is not self.head]

        def first(col, conv=to_float):
            for r in ordered:
                v = r.get(col)
                v = conv(v) if conv else v
                if v is not None:
                    return v
            return None

        self.first = first
        corr = first("correct", conv=lambda v: v if isinstance(v, str) and v.strip() else None)
        self.correct = stats.correct_array(corr) if corr else None
        self.accuracy = first("accuracy")
        if self.accuracy is None and self.correct is not None:
            self.accuracy = float(self.correct.mean())
        self.ci = stats.bootstrap_ci(self.correct, n_boot=N_BOOT, alpha=ALPHA) if self.correct is not None else None
        self.n_test = first("n_test")
        if self.n_test is None and self.correct is not None:
            self.n_test = int(self.correct.size)

    def row(self, t):
        return self.by_threads.get(t)

    def p50(self, t):
        r = self.by_threads.get(t)
        return None if r is None else to_float(r.get("latency_ms_p50"))


class ResultView:
    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.models: dict[tuple, ModelRows] = {}
        for r in rows:
            k = model_key(r)
            if k not in self.models:
                self.models[k] = ModelRows(k)
            self.models[k].add(r)
        for m in self.models.values():
            m.finalize()
        self.keys = sorted(self.models, key=_sort_key)
        self.runs = sorted({str(k[0]) for k in self.keys if k[0] is not None})
        self.multi_run = len(self.runs) > 1
        self.backbones = sorted({str(k[1]) for k in self.keys if k[1] is not None})
        self.threads = sorted({t for r in rows for t in [threads_of(r)] if t is not None})
        self.duplicates = sum(m.duplicates for m in self.models.values())

    def ref(self, key) -> ModelRows | None:
        return self.models.get(reference_model_key(key))

    def label(self, key) -> str:
        return model_label(key, self.multi_run)

    def speedup(self, m: ModelRows, t):
        r = m.row(t)
        if r is None:
            return None
        v = to_float(r.get("speedup_vs_fp32"))
        if v is not None:
            return v
        ref = self.ref(m.key)
        a, b = (ref.p50(t) if ref else None), m.p50(t)
        return a / b if a and b else None

    def size_ratio(self, m: ModelRows):
        v = m.first("size_ratio_vs_fp32")
        if v is not None:
            return v
        ref = self.ref(m.key)
        a, b = (ref.first("size_bytes") if ref else None), m.first("size_bytes")
        return b / a if a and b else None

    def mcnemar_vs(self, m: ModelRows, ref: ModelRows | None):
        if ref is None or m.correct is None or ref.correct is None or m.correct.size != ref.correct.size:
            return None
        return stats.mcnemar(ref.correct, m.correct)

    def per_thread(self, m: ModelRows, fn) -> str:
        return " / ".join(fn(m, t) for t in self.threads) if self.threads else fn(m, m.head_t)
