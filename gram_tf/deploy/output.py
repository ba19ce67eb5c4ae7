"""Output formats of `gram-tf predict`: a terminal table, CSV and JSON."""
from __future__ import annotations

import csv
import io
import json
from typing import Iterable, Sequence

def _top_columns(top_k: int) -> list[str]:
    cols = []
    for i in range(2, top_k + 1):
        cols += [f"top{i}_label", f"top{i}_prob"]
    return cols


def format_predictions(results: Sequence[dict], top_k: int = 1) -> str:
    """Plain-text table: path, label, prob and (top_k > 1) the runner-up labels."""
    if not results:
        return "(no images classified)"
    header = ["path", "label", "prob"]
    if top_k > 1:
        header.append(f"top {top_k}")
    rows = []
    for r in results:
        row = [r["path"], r["label"], f"{r['prob']:.4f}"]
        if top_k > 1:
            row.append(", ".join(f"{label} {p:.4f}" for label, p in r["top_k"][:top_k]))
        rows.append(row)
    widths = [max(len(str(x[i])) for x in [header] + rows) for i in range(len(header))]
    lines = []
    for i, row in enumerate([header] + rows):
        cells = [str(c).ljust(w) if j != 2 else str(c).rjust(w)
                 for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def to_csv(results: Sequence[dict], top_k: int = 1) -> str:
    """CSV: path,label,prob,[top2_label,top2_prob,...],prob_<label> for every label."""
    labels = list(results[0]["probs"]) if results else []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "prob"] + _top_columns(top_k)
                    + [f"prob_{label}" for label in labels])
    for r in results:
        row = [r["path"], r["label"], f"{r['prob']:.6f}"]
        for i in range(1, top_k):
            if i < len(r["top_k"]):
                row += [r["top_k"][i][0], f"{r['top_k'][i][1]:.6f}"]
            else:
                row += ["", ""]
        row += [f"{r['probs'].get(label, 0.0):.6f}" for label in labels]
        writer.writerow(row)
    return buf.getvalue()


def to_json(results: Iterable[dict], errors: Iterable[dict] = ()) -> str:
    return json.dumps({"results": list(results), "errors": list(errors)}, indent=2)
