"""The report's plots (matplotlib Agg figure objects only - no pyplot global state)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..io_utils import atomic_write_bytes
from ..metrics import reliability_bins
from . import stats
from .view import ResultView, fmt_sp, model_key, variant_rank

def _figure(w, h):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    return Figure(figsize=(w, h))


def _save_fig(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


_MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p", "d", "8"]


def _colors(n):
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if n <= 10 else colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_accuracy_vs_latency(d: ResultView, auto: dict, path: Path) -> None:
    from matplotlib.lines import Line2D

    fig = _figure(8, 5.5)
    ax = fig.add_subplot(111)
    bbs = d.backbones
    col = dict(zip(bbs, _colors(len(bbs))))
    variants = sorted({str(k[3]) for k in d.keys}, key=variant_rank)
    mk = {v: _MARKERS[i % len(_MARKERS)] for i, v in enumerate(variants)}
    pts, litert_pts = [], []
    for k in d.keys:
        m = d.models[k]
        lat = m.p50(m.head_t)
        if lat is None or m.accuracy is None:
            continue
        x, y = lat, 100.0 * m.accuracy
        hollow = k[2] > 0
        ci = stats.latency_interval(m.row(m.head_t) or {})
        if ci is not None:  # the latency's 95 % CI: overlapping bars are tied within noise
            ax.errorbar([x], [y], xerr=[[x - ci[0]], [ci[1] - x]], fmt="none", ecolor=col.get(str(k[1])),
                        elinewidth=1, capsize=3, zorder=2.5)
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
    ax.set_xlabel("p50 latency per image (ms) with its 95% CI, 1 thread or lowest tested")
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


def plot_sizes(d: ResultView, path: Path) -> None:
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
        ax.set_xticklabels([f"{k[3]}" + (f"\ns={fmt_sp(k[2])}" if k[2] else "") + (f"\n[{k[4]}]" if k[4] != "litert" else "") for k in ks], fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel("MB" + (" (log)" if log else ""))
        ax.set_title(f"{bb}" + (f" ({run})" if d.multi_run else ""), fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)


def pruned_groups(d: ResultView):
    """[((run, backbone), [variants with a pruned model])] in display order."""
    out = []
    for run in sorted({k[0] for k in d.keys}, key=lambda x: str(x)):
        for bb in d.backbones:
            ks = [k for k in d.keys if k[0] == run and str(k[1]) == bb]
            vs = sorted({(k[3], k[4]) for k in ks if k[2] > 0}, key=lambda v: (variant_rank(v[0]), v[1] != "litert", str(v[1])))
            if vs:
                out.append(((run, bb), vs))
    return out


def plot_sparsity(d: ResultView, groups, path: Path) -> None:
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


def plot_reliability(groups, path: Path, n_bins: int) -> None:
    """Reliability diagrams, one row per backbone: [(title, before, after)], each a list of (variant
    label, per-image top scores, per-image correctness); the right panel (after the temperature) only
    when some row has scores after it."""
    cols = 2 if any(after for _, _, after in groups) else 1
    fig = _figure(5.2 * cols + 1.8, 4.2 * len(groups))
    for i, (title, before, after) in enumerate(groups):
        for j, (curves, when) in enumerate([(before, "model's scores"), (after, "after temperature")][:cols]):
            ax = fig.add_subplot(len(groups), cols, cols * i + j + 1)
            ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="calibrated")
            for k, (label, conf, correct) in enumerate(curves):
                bins = reliability_bins(conf, correct, n_bins)
                ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins],
                        marker=_MARKERS[k % len(_MARKERS)], linewidth=1.2, label=label)
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("mean top score in the bin")
            ax.set_ylabel("accuracy in the bin")
            ax.set_title(f"{title}: {when}", fontsize=10)
            ax.grid(True, alpha=0.3)
            if j == cols - 1:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="variant")
    fig.tight_layout()
    _save_fig(fig, path)


def plot_accuracy_coverage(groups, path: Path) -> None:
    """Accuracy vs coverage, one panel per backbone: [(title, [(variant label, curve)], target)] with a
    curve from gram_tf.metrics.accuracy_coverage and the target accuracy (None: no line)."""
    fig = _figure(8, 3.8 * len(groups))
    for i, (title, curves, target) in enumerate(groups):
        ax = fig.add_subplot(len(groups), 1, i + 1)
        for k, (label, curve) in enumerate(curves):
            ax.plot([100.0 * c for _, c, _ in curve], [100.0 * a for _, _, a in curve],
                    marker=_MARKERS[k % len(_MARKERS)], markersize=3, linewidth=1.2, label=label)
        if target is not None:
            ax.axhline(100.0 * target, color="k", linestyle="--", linewidth=1, label="target")
        ax.set_xlim(0, 101)
        ax.set_xlabel("coverage: images kept (%)")
        ax.set_ylabel("accuracy on the images kept (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="variant")
    fig.tight_layout()
    _save_fig(fig, path)
