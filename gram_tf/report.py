"""Load benchmark result rows and turn them into a Markdown report with tables, statistics and plots.

Input rows are the flat benchmark rows (one per model x variant x runtime x threads) from
results.csv / results.json; see `COLUMNS`. A *model* is (run, backbone, sparsity_target, variant,
runtime); its *reference* is the dense fp32 LiteRT model of the same run and backbone (compared at
the same thread count for latency).

No TensorFlow here; matplotlib (Agg, figure objects only - no pyplot state) is imported lazily by
the plotting code.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from gram_tf import stats
from gram_tf.errors import GramTFError

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "INT_COLUMNS",
    "STR_COLUMNS",
    "load_results",
    "normalize_row",
    "build_report",
    "write_results_csv",
    "fmt_p",
    "fmt_bytes",
    "model_key",
    "model_label",
    "PLOT_FILES",
]

# Canonical column order (the benchmark writes these, in this order).
COLUMNS = [
    "run", "backbone", "variant", "runtime", "sparsity_target", "threads", "path",
    "size_bytes", "gzip_bytes", "zip_bytes", "sparsity", "accuracy", "loss", "f1_macro", "auc",
    "n_test", "latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p90",
    "latency_ms_p99", "first_ms", "init_ms", "images_per_s", "peak_rss_mb", "speedup_vs_fp32",
    "size_ratio_vs_fp32", "macs", "gmacs_per_s", "correct", "input_size",
]
# A file lacking any of these is rejected; other canonical columns that are absent become None.
REQUIRED_COLUMNS = [
    "run", "backbone", "variant", "runtime", "sparsity_target", "threads", "accuracy", "latency_ms_p50",
]
INT_COLUMNS = {"threads", "size_bytes", "gzip_bytes", "zip_bytes", "n_test", "macs", "input_size"}
STR_COLUMNS = {"run", "backbone", "variant", "runtime", "path", "correct"}
FLOAT_COLUMNS = set(COLUMNS) - INT_COLUMNS - STR_COLUMNS

PLOT_FILES = ("accuracy_vs_latency.png", "size_per_variant.png", "sparsity_vs_accuracy.png")

VARIANT_ORDER = [
    "fp32", "fp16", "dynamic", "int16x8", "int8", "int8-per-tensor", "int8-selective",
    "qat-int8", "pqat-int8", "keras",
]
N_BOOT = 2000
ALPHA = 0.05


# =========================================================================== loading


class _BadValue(ValueError):
    pass


def _to_number(col: str, v):
    """Convert one value of a numeric column; None for missing; raises _BadValue if not a number."""
    if v is None:
        return None
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, str):
        s = v.strip()
        if not s or s.lower() in {"none", "null", "nan", "n/a", "na"}:
            return None
        try:
            x = float(s)
        except ValueError:
            raise _BadValue(f"column {col!r} should be a number, got {v!r}") from None
    elif isinstance(v, (int, float, np.integer, np.floating)):
        x = float(v)
    else:
        raise _BadValue(f"column {col!r} should be a number, got {type(v).__name__}")
    if not math.isfinite(x):
        return None
    if col in INT_COLUMNS and x.is_integer():
        return int(x)
    return x


def _to_str(col: str, v, n_test=None):
    if v is None:
        return None
    if col == "correct" and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        # A JSON writer that let a 0/1 string become a number loses leading zeros; restore them.
        s = str(int(v))
        return s.zfill(int(n_test)) if n_test else s
    if col == "correct" and isinstance(v, (list, tuple)):
        return "".join("1" if bool(x) else "0" for x in v) or None
    s = str(v)
    if col == "correct":
        s = s.strip()
    return s if s.strip() else None


def normalize_row(row: dict) -> dict:
    """Typed copy of one result row: numbers converted, `correct` kept a string, empty -> None.

    Key order is preserved; canonical columns that are absent are appended with value None.
    Raises ValueError (with the column name) for a value that is not a number in a numeric column.
    """
    out = {}
    n_test = None
    try:
        n_test = _to_number("n_test", row.get("n_test"))
    except _BadValue:
        pass
    for k, v in row.items():
        if k is None:
            raise ValueError("the row has more fields than the header")
        k = str(k)
        if k in INT_COLUMNS or k in FLOAT_COLUMNS:
            out[k] = _to_number(k, v)
        elif k in STR_COLUMNS:
            out[k] = _to_str(k, v, n_test)
        elif isinstance(v, str):
            out[k] = v if v.strip() else None
        else:
            out[k] = v
    for k in COLUMNS:
        out.setdefault(k, None)
    if out.get("correct") is not None and set(out["correct"]) - {"0", "1"}:
        raise ValueError(f"column 'correct' may only contain '0' and '1', got {out['correct'][:20]!r}")
    return out


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise GramTFError(f"{path}: empty results file (no CSV header); rerun the benchmark")
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise GramTFError(
                    f"{path}: missing required column(s) {', '.join(missing)}; "
                    f"expected a gram_tf benchmark results.csv"
                )
            raw = list(reader)
    except GramTFError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise GramTFError(f"{path}: cannot read results CSV ({_one_line(e)})") from e
    rows = []
    for i, r in enumerate(raw, start=2):  # line 1 is the header
        try:
            rows.append(normalize_row(r))
        except ValueError as e:
            raise GramTFError(f"{path}: line {i}: {_one_line(e)}") from e
    return rows


def _read_json(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise GramTFError(f"{path}: invalid JSON ({_one_line(e)})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise GramTFError(f"{path}: cannot read results JSON ({_one_line(e)})") from e
    if not isinstance(data, list):
        raise GramTFError(f"{path}: expected a JSON list of result rows, got {type(data).__name__}")
    rows = []
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise GramTFError(f"{path}: row {i} is {type(r).__name__}, expected an object")
        missing = [c for c in REQUIRED_COLUMNS if c not in r]
        if missing:
            raise GramTFError(f"{path}: row {i} is missing required column(s) {', '.join(missing)}")
        try:
            rows.append(normalize_row(r))
        except ValueError as e:
            raise GramTFError(f"{path}: row {i}: {_one_line(e)}") from e
    return rows


def _one_line(e) -> str:
    return " ".join(str(e).split())


def load_results(paths) -> list[dict]:
    """Load and merge result rows from results.csv / results.json files or directories holding them.

    paths: a list of str/Path (a single str/Path is accepted too). A directory is read through its
    results.json if present, else its results.csv (not both: they hold the same rows). A file is
    read by its suffix (.json, else CSV). Rows are typed by `normalize_row`; files are concatenated
    in the order given. Raises GramTFError (one line, naming the path) for a missing path, a
    directory with neither file, an unreadable or invalid file, or missing required columns.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows: list[dict] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            if (path / "results.json").is_file():
                path = path / "results.json"
            elif (path / "results.csv").is_file():
                path = path / "results.csv"
            else:
                raise GramTFError(f"{path}: directory has no results.json or results.csv; run the benchmark first")
        elif not path.exists():
            raise GramTFError(f"{path}: results file not found")
        if path.suffix.lower() == ".json":
            rows.extend(_read_json(path))
        else:
            rows.extend(_read_csv(path))
    return rows


# =========================================================================== atomic output


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mask = os.umask(0)  # mkstemp creates 0600; give the file the usual umask-based mode
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def _columns_of(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    seen = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def _csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def write_results_csv(rows: list[dict], path) -> Path:
    """Write rows to a CSV (atomically), columns in first-appearance order, None as empty."""
    cols = _columns_of(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_csv_cell(r.get(c)) for c in cols])
    _atomic_write_text(Path(path), buf.getvalue())
    return Path(path)


# =========================================================================== formatting


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


def _fmt_pct(x) -> str:
    return "n/a" if x is None else f"{100.0 * x:.1f}%"


def _fmt_ci(ci) -> str:
    return "n/a" if ci is None else f"[{100.0 * ci[0]:.1f}, {100.0 * ci[1]:.1f}]"


def _fmt_num(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _fmt_ms(x) -> str:
    if x is None:
        return "n/a"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:.0f}"


def _fmt_rate(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _fmt_x(x) -> str:
    return "n/a" if x is None else f"{x:.2f}×"


def _fmt_pp(x) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.1f}"


def _fmt_sp(s) -> str:
    return f"{s:g}"


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for r in body:
        lines.append("| " + " | ".join(_cell(c) for c in r) + " |")
    return "\n".join(lines)


# =========================================================================== model bookkeeping


_f = stats._f
_sparsity = stats._sparsity
_threads = stats._threads


def model_key(row: dict) -> tuple:
    """(run, backbone, sparsity_target, variant, runtime): identifies one model (any thread count)."""
    return (row.get("run"), row.get("backbone"), _sparsity(row), row.get("variant"), row.get("runtime"))


def _ref_model_key(key: tuple) -> tuple:
    return (key[0], key[1], 0.0, "fp32", "litert")


def _variant_rank(v) -> tuple:
    v = "" if v is None else str(v)
    return (VARIANT_ORDER.index(v), "") if v in VARIANT_ORDER else (len(VARIANT_ORDER), v)


def _sort_key(key: tuple) -> tuple:
    run, bb, sp, var, rt = key
    return (str(run or ""), str(bb or ""), sp, _variant_rank(var), 0 if rt == "litert" else 1, str(rt or ""))


def model_label(key: tuple, with_run: bool = False) -> str:
    run, bb, sp, var, rt = key
    s = f"{bb}/{var}"
    if sp:
        s += f"@s{_fmt_sp(sp)}"
    if rt and rt != "litert":
        s += f" [{rt}]"
    if with_run:
        s = f"{run}:{s}"
    return s


class _Model:
    """All rows of one model (one per thread count) plus thread-independent derived values."""

    def __init__(self, key):
        self.key = key
        self.by_threads: dict = {}
        self.duplicates = 0

    def add(self, row):
        t = _threads(row)
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

        def first(col, conv=_f):
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
        return None if r is None else _f(r.get("latency_ms_p50"))


class _Data:
    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.models: dict[tuple, _Model] = {}
        for r in rows:
            k = model_key(r)
            if k not in self.models:
                self.models[k] = _Model(k)
            self.models[k].add(r)
        for m in self.models.values():
            m.finalize()
        self.keys = sorted(self.models, key=_sort_key)
        self.runs = sorted({str(k[0]) for k in self.keys if k[0] is not None})
        self.multi_run = len(self.runs) > 1
        self.backbones = sorted({str(k[1]) for k in self.keys if k[1] is not None})
        self.threads = sorted({t for r in rows for t in [_threads(r)] if t is not None})
        self.duplicates = sum(m.duplicates for m in self.models.values())

    def ref(self, key) -> _Model | None:
        return self.models.get(_ref_model_key(key))

    def label(self, key) -> str:
        return model_label(key, self.multi_run)

    def speedup(self, m: _Model, t):
        r = m.row(t)
        if r is None:
            return None
        v = _f(r.get("speedup_vs_fp32"))
        if v is not None:
            return v
        ref = self.ref(m.key)
        a, b = (ref.p50(t) if ref else None), m.p50(t)
        return a / b if a and b else None

    def size_ratio(self, m: _Model):
        v = m.first("size_ratio_vs_fp32")
        if v is not None:
            return v
        ref = self.ref(m.key)
        a, b = (ref.first("size_bytes") if ref else None), m.first("size_bytes")
        return b / a if a and b else None

    def mcnemar_vs(self, m: _Model, ref: _Model | None):
        if ref is None or m.correct is None or ref.correct is None or m.correct.size != ref.correct.size:
            return None
        return stats.mcnemar(ref.correct, m.correct)

    def per_thread(self, m: _Model, fn) -> str:
        return " / ".join(fn(m, t) for t in self.threads) if self.threads else fn(m, m.head_t)


# =========================================================================== plots


def _figure(w, h):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    return Figure(figsize=(w, h))


def _save_fig(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _atomic_write_bytes(path, buf.getvalue())


_MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p", "d", "8"]


def _colors(n):
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if n <= 10 else colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _plot_accuracy_vs_latency(d: _Data, auto: dict, path: Path) -> None:
    from matplotlib.lines import Line2D

    fig = _figure(8, 5.5)
    ax = fig.add_subplot(111)
    bbs = d.backbones
    col = dict(zip(bbs, _colors(len(bbs))))
    variants = sorted({str(k[3]) for k in d.keys}, key=_variant_rank)
    mk = {v: _MARKERS[i % len(_MARKERS)] for i, v in enumerate(variants)}
    pts, litert_pts = [], []
    for k in d.keys:
        m = d.models[k]
        lat = m.p50(m.head_t)
        if lat is None or m.accuracy is None:
            continue
        x, y = lat, 100.0 * m.accuracy
        hollow = k[2] > 0
        ax.scatter([x], [y], marker=mk[str(k[3])], s=60, zorder=3,
                   facecolors="none" if hollow else col.get(str(k[1])), edgecolors=col.get(str(k[1])),
                   linewidths=1.5)
        pts.append((x, y))
        if k[4] == "litert":
            litert_pts.append((x, y))
    if litert_pts:
        flags = stats.pareto_front(litert_pts)
        front = sorted(p for p, f in zip(litert_pts, flags) if f)
        if front:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="k",
                    linestyle="--", linewidth=1, zorder=2, label="Pareto front (LiteRT)")
    ringed = False
    for (run, bb, t), row in auto.items():
        m = d.models.get(model_key(row))
        if m is None or t != m.head_t:
            continue
        ax.scatter([m.p50(t)], [100.0 * m.accuracy], s=320, facecolors="none", edgecolors="red",
                   linewidths=2, zorder=4, label=None if ringed else "auto choice")
        ringed = True
    if pts:
        xs = [p[0] for p in pts]
        if max(xs) / max(min(xs), 1e-9) > 10:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("p50 latency per image (ms), 1 thread or lowest tested")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs latency (hollow = pruned)")
    ax.grid(True, alpha=0.3)
    h1 = [Line2D([], [], color=col[b], marker="o", linestyle="", label=b) for b in bbs]
    h2 = [Line2D([], [], color="gray", marker=mk[v], linestyle="", label=v) for v in variants]
    h3, _ = ax.get_legend_handles_labels()
    leg = ax.legend(handles=h1 + h3, loc="lower right", fontsize=8, title="backbone")
    ax.add_artist(leg)
    ax.legend(handles=h2, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="variant")
    _save_fig(fig, path)


def _plot_sizes(d: _Data, path: Path) -> None:
    groups = []
    for run in sorted({k[0] for k in d.keys}, key=lambda x: str(x)):
        for bb in d.backbones:
            ks = [k for k in d.keys if k[0] == run and str(k[1]) == bb]
            ks = [k for k in ks if d.models[k].first("size_bytes") is not None or d.models[k].first("zip_bytes") is not None]
            if ks:
                groups.append(((run, bb), ks))
    fig = _figure(max(7, 0.9 * max((len(ks) for _, ks in groups), default=4) + 2), 3.2 * max(1, len(groups)))
    if not groups:
        ax = fig.add_subplot(111)
        ax.text(0.5, 0.5, "no model sizes in these results", ha="center", va="center")
        ax.set_axis_off()
        _save_fig(fig, path)
        return
    allv = [v for _, ks in groups for k in ks for v in (d.models[k].first("size_bytes"), d.models[k].first("zip_bytes")) if v]
    log = bool(allv) and max(allv) / min(allv) > 20
    for i, ((run, bb), ks) in enumerate(groups):
        ax = fig.add_subplot(len(groups), 1, i + 1)
        x = np.arange(len(ks))
        size = [(d.models[k].first("size_bytes") or 0) / 1e6 for k in ks]
        zipb = [(d.models[k].first("zip_bytes") or 0) / 1e6 for k in ks]
        ax.bar(x - 0.2, size, width=0.4, label="size")
        ax.bar(x + 0.2, zipb, width=0.4, label="zip size")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{k[3]}" + (f"\ns={_fmt_sp(k[2])}" if k[2] else "") + (f"\n[{k[4]}]" if k[4] != "litert" else "") for k in ks], fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel("MB" + (" (log)" if log else ""))
        ax.set_title(f"{bb}" + (f" ({run})" if d.multi_run else ""), fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)


def _pruned_groups(d: _Data):
    """[((run, backbone), [variants with a pruned model])] in display order."""
    out = []
    for run in sorted({k[0] for k in d.keys}, key=lambda x: str(x)):
        for bb in d.backbones:
            ks = [k for k in d.keys if k[0] == run and str(k[1]) == bb]
            vs = sorted({(k[3], k[4]) for k in ks if k[2] > 0}, key=lambda v: (_variant_rank(v[0]), v[1] != "litert", str(v[1])))
            if vs:
                out.append(((run, bb), vs))
    return out


def _plot_sparsity(d: _Data, groups, path: Path) -> None:
    fig = _figure(11, 3.4 * len(groups))
    for i, ((run, bb), vs) in enumerate(groups):
        ax1 = fig.add_subplot(len(groups), 2, 2 * i + 1)
        ax2 = fig.add_subplot(len(groups), 2, 2 * i + 2)
        for j, (var, rt) in enumerate(vs):
            ks = sorted((k for k in d.keys if k[0] == run and str(k[1]) == bb and k[3] == var and k[4] == rt), key=lambda k: k[2])
            lab = var if rt == "litert" else f"{var} [{rt}]"
            mk = _MARKERS[j % len(_MARKERS)]
            acc = [(k[2], 100.0 * d.models[k].accuracy) for k in ks if d.models[k].accuracy is not None]
            zp = [(k[2], d.models[k].first("zip_bytes") / 1e6) for k in ks if d.models[k].first("zip_bytes")]
            if acc:
                ax1.plot([a for a, _ in acc], [b for _, b in acc], marker=mk, label=lab)
            if zp:
                ax2.plot([a for a, _ in zp], [b for _, b in zp], marker=mk, label=lab)
        t = f"{bb}" + (f" ({run})" if d.multi_run else "")
        ax1.set_title(f"{t}: accuracy", fontsize=10)
        ax2.set_title(f"{t}: zip size", fontsize=10)
        ax1.set_xlabel("sparsity target")
        ax2.set_xlabel("sparsity target")
        ax1.set_ylabel("accuracy (%)")
        ax2.set_ylabel("zip size (MB)")
        for ax in (ax1, ax2):
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)


# =========================================================================== report sections


def _auto_summary(d: _Data, key, row) -> dict:
    run, bb, t = key
    m = d.models[model_key(row)]
    ref = d.ref(m.key)
    return {
        "run": run, "backbone": bb, "threads": t, "variant": row.get("variant"),
        "sparsity_target": _sparsity(row), "runtime": row.get("runtime"), "path": row.get("path"),
        "accuracy": _f(row.get("accuracy")), "fp32_accuracy": ref.accuracy if ref else None,
        "latency_ms_p50": _f(row.get("latency_ms_p50")), "speedup_vs_fp32": d.speedup(m, t),
        "size_bytes": _f(row.get("size_bytes")), "zip_bytes": _f(row.get("zip_bytes")),
    }


def _section_summary(d: _Data, auto: dict, max_drop: float) -> str:
    n_tests = sorted({m.n_test for m in d.models.values() if m.n_test is not None})
    out = ["## 1. Summary", ""]
    out.append(f"- Runs: {', '.join(d.runs) or 'n/a'}")
    out.append(f"- Backbones: {', '.join(d.backbones) or 'n/a'}")
    out.append(f"- Test images (n_test): {', '.join(str(int(n)) for n in n_tests) or 'n/a'}")
    out.append(f"- CPU threads tested: {', '.join(str(t) for t in d.threads) or 'n/a'}")
    out.append(f"- Result rows: {len(d.rows)} ({len(d.models)} models)")
    if d.duplicates:
        out.append(f"- Warning: {d.duplicates} duplicate row(s) (same model and thread count) ignored; the first one was kept")
    out.append(
        f"- Auto choice (**auto**): per run, backbone and thread count, the fastest LiteRT model "
        f"(lowest p50 latency) whose accuracy is at least the dense fp32 accuracy − {100 * max_drop:.1f} "
        f"percentage points."
    )
    out.append("")
    body = []
    for key in sorted(auto, key=lambda k: (str(k[0]), str(k[1]), k[2] if k[2] is not None else -1)):
        row = auto[key]
        s = _auto_summary(d, key, row)
        m = d.models[model_key(row)]
        drop = (s["accuracy"] - s["fp32_accuracy"]) if s["accuracy"] is not None and s["fp32_accuracy"] is not None else None
        body.append(([s["run"]] if d.multi_run else []) + [
            s["backbone"], s["threads"], f"**{s['variant']}** (auto)", _fmt_sp(s["sparsity_target"]),
            _fmt_pct(s["accuracy"]), _fmt_pct(s["fp32_accuracy"]), _fmt_pp(drop), _fmt_ms(s["latency_ms_p50"]),
            _fmt_x(s["speedup_vs_fp32"]), fmt_bytes(m.first("size_bytes")), fmt_bytes(m.first("zip_bytes")),
        ])
    if body:
        hdr = (["run"] if d.multi_run else []) + [
            "backbone", "threads", "auto choice", "sparsity", "accuracy", "fp32 accuracy", "Δ acc (pp)",
            "p50 (ms)", "speed-up vs fp32", "size", "zip size"]
        out.append(_table(hdr, body))
    else:
        out.append("No auto choice: no dense fp32 LiteRT reference row with an accuracy was found.")
    groups = {stats.reference_key(r) for r in d.rows}
    skipped = sorted((g for g in groups if g not in auto), key=lambda g: (str(g[0]), str(g[1]), g[2] or -1))
    if skipped:
        out.append("")
        out.append("Skipped (no dense fp32 LiteRT reference): " + ", ".join(f"{g[1]} @ {'unknown' if g[2] is None else g[2]} threads" + (f" ({g[0]})" if d.multi_run else "") for g in skipped))
    return "\n".join(out)


def _auto_marks(d: _Data, auto: dict) -> dict:
    marks: dict = {}
    for (run, bb, t), row in auto.items():
        marks.setdefault(model_key(row), []).append(t)
    return marks


def _section_models(d: _Data, auto: dict) -> str:
    marks = _auto_marks(d, auto)
    n_tests = sorted({m.n_test for m in d.models.values() if m.n_test is not None})
    tl = " / ".join(f"{t}t" for t in d.threads)
    out = ["## 2. Models and configurations", ""]
    out.append(
        f"n = {', '.join(str(int(n)) for n in n_tests) or 'n/a'} test images per model. Accuracy with its 95% "
        f"percentile-bootstrap CI over test images ({N_BOOT} resamples; n/a without per-image results). "
        f"Latency: median (p50) ms per image at each thread count ({tl}); images/s and speed-up are listed per "
        f"thread count in the same order. Speed-up and size ratio are relative to the dense fp32 LiteRT model "
        f"of the same backbone (size ratio = size / fp32 size). 1 MB = 10^6 bytes."
    )
    out.append("")
    hdr = (["run"] if d.multi_run else []) + [
        "backbone", "sparsity", "variant", "runtime", "accuracy [95% CI]", "loss", "F1 (macro)", "AUC",
        "size", "zip size"] + [f"p50 @{t}t (ms)" for t in d.threads] + [
        f"images/s ({tl})", f"speed-up vs fp32 ({tl})", "size ratio vs fp32", "auto"]
    body = []
    for k in d.keys:
        m = d.models[k]
        run, bb, sp, var, rt = k
        body.append(([run] if d.multi_run else []) + [
            bb, _fmt_sp(sp), var, rt, f"{_fmt_pct(m.accuracy)} {_fmt_ci(m.ci)}",
            _fmt_num(m.first("loss")), _fmt_num(m.first("f1_macro")), _fmt_num(m.first("auc")),
            fmt_bytes(m.first("size_bytes")), fmt_bytes(m.first("zip_bytes")),
        ] + [_fmt_ms(m.p50(t)) for t in d.threads] + [
            d.per_thread(m, lambda mm, t: _fmt_rate(_f((mm.row(t) or {}).get("images_per_s")))),
            d.per_thread(m, lambda mm, t: _fmt_x(d.speedup(mm, t))),
            _fmt_num(d.size_ratio(m), 3),
            ("**auto** (" + ", ".join(f"{t}t" for t in sorted(marks[k], key=lambda x: x or 0)) + ")") if k in marks else "",
        ])
    out.append(_table(hdr, body))
    return "\n".join(out)


def _section_int8(d: _Data) -> str:
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
        row = ([run] if d.multi_run else []) + [bb] + ([_fmt_sp(sp)] if any_sp else []) + [_fmt_pct(ref.accuracy if ref else None)]
        accs = []
        for var in ("int8", "int8-per-tensor"):
            m = d.models.get((run, bb, sp, var, "litert"))
            if m is None:
                row += ["n/a"] * 4
                accs.append(None)
                continue
            mc = d.mcnemar_vs(m, ref)
            row += [f"{_fmt_pct(m.accuracy)} {_fmt_ci(m.ci)}", d.per_thread(m, lambda mm, t: _fmt_ms(mm.p50(t))),
                    d.per_thread(m, lambda mm, t: _fmt_x(d.speedup(mm, t))), fmt_p(mc["p_value"]) if mc else "n/a"]
            accs.append(m.accuracy)
        row.append(_fmt_pp(accs[0] - accs[1]) if None not in accs else "n/a")
        body.append(row)
    out.append(_table(hdr, body))
    return "\n".join(out)


def _section_pruning(d: _Data, groups) -> str:
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
        for k in sorted(ks, key=lambda k: (k[2], _variant_rank(k[3]), str(k[4]))):
            m = d.models[k]
            zipb = m.first("zip_bytes")
            ms = m.first("sparsity")
            delta = (m.accuracy - ref.accuracy) if ref and ref.accuracy is not None and m.accuracy is not None else None
            body.append(([run] if d.multi_run else []) + [
                bb, _fmt_sp(k[2]), "n/a" if ms is None else f"{ms:.3f}", k[3], k[4],
                f"{_fmt_pct(m.accuracy)} {_fmt_ci(m.ci)}", _fmt_pp(delta), fmt_bytes(m.first("size_bytes")),
                fmt_bytes(zipb), _fmt_x(ref_zip / zipb) if ref_zip and zipb else "n/a",
            ] + [_fmt_ms(m.p50(t)) for t in d.threads])
    out.append(_table(hdr, body))
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
    out.append(_table(hdr, body))
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


def _section_stats(d: _Data) -> tuple[str, dict]:
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
        if k == _ref_model_key(k):
            continue
        m = d.models[k]
        ref = d.ref(k)
        mc = d.mcnemar_vs(m, ref)
        same = None
        if sp > 0 and not (var == "fp32" and rt == "litert"):
            same = d.mcnemar_vs(m, d.models.get((run, bb, sp, "fp32", "litert")))
        mcn[k] = {"vs_dense_fp32": mc, "vs_fp32_same_sparsity": same}
        body.append(([run] if d.multi_run else []) + [
            bb, _fmt_sp(sp), var, rt, _fmt_pct(m.accuracy),
            mc["b"] if mc else "n/a", mc["c"] if mc else "n/a",
            f"{mc['statistic']:.3g}" if mc else "n/a", mc["method"] if mc else "n/a",
            fmt_p(mc["p_value"]) if mc else "n/a",
            fmt_p(same["p_value"]) if same else ("n/a" if sp > 0 and var != "fp32" else "–"),
        ])
    out.append(_table(hdr, body) if body else "No models besides the fp32 reference.")
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
        extra = {"columns": ["accuracy"], "values": {d.label(k): [_fmt_pct(d.models[k].accuracy)] for k in ks}}
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
        confs = sorted(confs or [], key=lambda c: (c[0], _variant_rank(c[1]), str(c[2])))
        mat = np.array([[d.models[(run, bb, *c)].accuracy for bb in bbs] for c in confs], dtype=float).reshape(len(confs), len(bbs))
        res = stats.friedman_nemenyi(mat, bbs, alpha=ALPHA)
        reason = stats.friedman_skip_reason(mat, bbs)
        if res is None and len(confs) < 2:
            reason = f"only {len(confs)} configuration(s) (sparsity, variant, runtime) shared by all backbones; need at least 2"
        text = (
            "Blocks are the configurations (sparsity, variant, runtime) that every backbone has: "
            + ", ".join(f"{c[1]}@s{_fmt_sp(c[0])}" + (f" [{c[2]}]" if c[2] != "litert" else "") for c in confs)
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


def build_report(rows: Iterable[dict], out_dir, max_drop: float = 0.01, title: str = "gram_tf report") -> dict:
    """Write report.md, results.csv and the PNG plots into out_dir (created if needed).

    rows: result rows (typed by `load_results`, or raw benchmark dicts: they are normalized here).
    max_drop: accuracy drop allowed for the auto choice, absolute (0.01 = 1 percentage point).
    Every file is written atomically (temp file in out_dir + os.replace).

    Returns {"report": Path, "results_csv": Path, "plots": [Path, ...],
             "auto": {"<run>/<backbone>/threads=<t>": summary dict}, "skipped_plots": {name: reason}}.
    The auto summary has run, backbone, threads, variant, sparsity_target, runtime, path, accuracy,
    fp32_accuracy, latency_ms_p50, speedup_vs_fp32, size_bytes, zip_bytes.
    """
    try:
        rows = [normalize_row(r) for r in rows]
    except ValueError as e:
        raise GramTFError(f"invalid result row: {_one_line(e)}") from e
    if not rows:
        raise GramTFError("no result rows to report; run the benchmark first or check the results paths")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = _Data(rows)
    auto = stats.select_auto(rows, max_drop=max_drop)

    csv_path = write_results_csv(rows, out / "results.csv")

    plots: list[Path] = []
    skipped: dict = {}
    p = out / "accuracy_vs_latency.png"
    _plot_accuracy_vs_latency(d, auto, p)
    plots.append(p)
    p = out / "size_per_variant.png"
    _plot_sizes(d, p)
    plots.append(p)
    pruned = _pruned_groups(d)
    if pruned:
        p = out / "sparsity_vs_accuracy.png"
        _plot_sparsity(d, pruned, p)
        plots.append(p)
    else:
        skipped["sparsity_vs_accuracy.png"] = "no pruned models (sparsity_target > 0)"

    stats_md, _ = _section_stats(d)
    parts = [
        f"# {title}",
        "",
        "Generated by `gram_tf.report` from the benchmark result rows (all rows are in [results.csv](results.csv)).",
        "",
        _section_summary(d, auto, max_drop),
        "",
        _section_models(d, auto),
        "",
        _section_int8(d),
        "",
        _section_pruning(d, pruned),
        "",
        stats_md,
        "",
        _section_plots(plots, bool(pruned)),
        "",
    ]
    report_path = out / "report.md"
    _atomic_write_text(report_path, "\n".join(parts))
    auto_out = {f"{k[0]}/{k[1]}/threads={k[2]}": _auto_summary(d, k, r) for k, r in auto.items()}
    return {"report": report_path, "results_csv": csv_path, "plots": plots, "auto": auto_out, "skipped_plots": skipped}
