"""The README's registry-sweep table from bench_int8.py result files (fp32 / int8 / int8-fast rows).

    python benchmarks/sweep_table.py int8_all int8_rest [--threads 2]
Prints a markdown table (one line per backbone, smallest GMAC first) and a one-line summary.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402

from gram_tf.metrics import within_drop  # noqa: E402

HEADER = ("| backbone | GMAC | fp32 ms | int8 ms (acc Δ pp) | int8-fast ms (acc Δ pp) | int8 / int8-fast vs fp32 "
          "| best int8 within 1 pp | partitions int8 → int8-fast | int8-fast candidate (float ops) |")


def load(names: list[str], threads: int) -> dict[str, dict[str, dict]]:
    """backbone -> variant -> row (LiteRT rows at `threads`); a later file wins for a backbone."""
    out: dict[str, dict[str, dict]] = {}
    for name in names:
        path = RESULTS / f"{name}.csv"
        if not path.is_file():
            raise SystemExit(f"{path}: no such results file; run benchmarks/bench_int8.py --name {name} first")
        per_file: dict[str, dict[str, dict]] = {}
        for r in csv.DictReader(path.open()):
            if r["runtime"] == "litert" and int(r["threads"]) == threads:
                per_file.setdefault(r["backbone"], {})[r["variant"]] = r
        out.update(per_file)
    return out


def table(rows: dict[str, dict[str, dict]]) -> tuple[list[str], dict]:
    lines = [HEADER, "|" + "---|" * 9]
    ratios = {}
    for name in sorted(rows, key=lambda b: (float(rows[b]["fp32"]["macs"]), b)):
        v = rows[name]
        fp32, int8, fast = v["fp32"], v.get("int8"), v.get("int8-fast")
        ms = {k: float(r["latency_ms_p50"]) for k, r in v.items()}
        acc = {k: float(r["accuracy"]) for k, r in v.items()}

        def cell(k):
            return f"{ms[k]:.1f} ({100 * (acc[k] - acc['fp32']):+.1f})" if k in v else "-"

        speed = {k: ms["fp32"] / ms[k] for k in ("int8", "int8-fast") if k in v}
        ok = {k: s for k, s in speed.items() if within_drop(acc["fp32"], acc[k], 0.01)}
        best = max(ok, key=ok.get) if ok else None
        ratios[name] = {"int8-fast": speed.get("int8-fast"), "best_within_1pp": ok.get(best) if best else None}
        lines.append("| " + " | ".join([
            name, f"{float(fp32['macs']) / 1e9:.2f}", f"{ms['fp32']:.1f}", cell("int8"), cell("int8-fast"),
            " / ".join(f"{speed[k]:.2f}x" if k in speed else "-" for k in ("int8", "int8-fast")),
            f"{ok[best]:.2f}x ({best})" if best else "none within 1 pp",
            f"{int8['partitions'] if int8 else '-'} → {fast['partitions'] if fast else '-'}",
            fast.get("fast_choice") or "-" if fast else "-"]) + " |")
    return lines, ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", help="result names under benchmarks/results (without .csv)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    lines, ratios = table(load(args.names, args.threads))
    print("\n".join(lines))
    fast = {b: r["int8-fast"] for b, r in ratios.items() if r["int8-fast"]}
    slower = sorted(b for b, s in fast.items() if s < 1.0)
    # result files without int8-fast rows (bench_int8.py --variants fp32,int8) still get their table
    span = "no int8-fast rows"
    if fast:
        span = (f"int8-fast vs fp32 {min(fast.values()):.2f}x ({min(fast, key=fast.get)}) to "
                f"{max(fast.values()):.2f}x ({max(fast, key=fast.get)}); slower than fp32: {', '.join(slower) or 'none'}")
    print(f"\n{len(ratios)} backbones; {span}; "
          f"no int8 within 1 pp: {', '.join(sorted(b for b, r in ratios.items() if r['best_within_1pp'] is None))}")


if __name__ == "__main__":
    main()
