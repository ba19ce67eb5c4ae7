"""How far `gram-tf bench`'s speed-ups are from the truth, before and after timing in rounds, on a
quiet machine and with a CPU-burning process beside it (issue 37).

For each artifact folder (`--set NAME=DIR`, every .tflite in it, LiteRT rows only, no evaluation):
- truth: an independent interleaved timing of the same files in this process
  (`gram_tf.deploy.time_interleaved`, `--truth-rounds` rotated rounds, quiet machine), measured once
  before and once after the bench runs; its own drift is reported as the truth's error;
- before: `gram-tf bench` as it was (one timing per model, one after another, 50 runs, each in a
  fresh process): with `--before-src DIR` the old code itself (a checkout of the commit before
  rounds), else the current code with `--rounds 1 --runs 50`, the same order;
- after: `gram-tf bench` with its defaults (rounds, paired speed-ups with CIs).
Each bench runs quiet and again beside `--burners` busy-looping processes. Error of a file = bench
speed-up vs fp32 / truth speed-up - 1; the summary gives the mean and worst |error|, how many
speed-ups the truth orders differently (pairs the truth separates by more than 5 %), and for `after`
how many truth speed-ups fall inside the bench's CI and what the noise guard said.

    python benchmarks/bench_trust.py --set quickstart=tflite_models/quickstart \
        --set pruned=/tmp/trust/tflite/prune_levels --threads 2 --before-src /tmp/wt-old [--out bench_trust]

Writes benchmarks/results/<out>.{csv,json} (rows: set, condition, method, file, speed-ups, errors)
and <out>.summary.{csv,json}.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_results  # noqa: E402

from gram_tf.config import BenchConfig  # noqa: E402

BURN = "while True: pass"


def truth(files, threads: int, rounds: int, runs: int) -> dict:
    """{file name: (p50, paired speed-up vs fp32)} from an in-process interleaved timing."""
    from gram_tf.deploy.timing import invoker, paired_speedup, parse_rounds, time_interleaved

    runners = {f.name: invoker(str(f), threads, np.random.default_rng(0)) for f in files}
    timed = time_interleaved(runners, rounds=rounds, runs=runs, warmup=5)
    ref = parse_rounds(timed[fp32_of(files).name]["round_ms"])
    return {k: (v["latency_ms_p50"], paired_speedup(ref, parse_rounds(v["round_ms"]))[0]) for k, v in timed.items()}


def fresh_process_cost(path: Path, threads: int, n: int = 5) -> dict:
    """What a fresh worker process per visit would cost: wall time of a one-shot timing worker (start,
    imports, load, one run) and its peak memory, median of `n`."""
    walls, rss = [], []
    spec = json.dumps({"kind": "tflite", "path": str(path), "threads": threads, "runs": 1, "warmup": 0,
                       "max_seconds": None})
    for _ in range(n):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "gram_tf.bench.worker", spec], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        walls.append(time.perf_counter() - t0)
        rss.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"])
    return {"fresh_worker_s": round(float(np.median(walls)), 3), "fresh_worker_rss_mb": round(float(np.median(rss)), 1)}


def fp32_of(files):
    dense = [f for f in files if f.stem.endswith("__fp32")]
    if not dense:
        raise SystemExit(f"error: no <backbone>__fp32.tflite among {[f.name for f in files]}; the speed-ups need it")
    return dense[0]


def bench(folder: Path, threads: int, method: str, before_src, evaluate: bool) -> tuple[dict, float]:
    """{file name: row} of one `gram-tf bench` run of `method` (before | after), its auto choice (with
    evaluation) and its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.csv"
        common = [str(folder), "--threads", str(threads), "--no-keras", "--out", str(out)] + ([] if evaluate else ["--no-eval"])
        env = dict(os.environ)
        if method == "before" and before_src:
            env["PYTHONPATH"] = str(Path(before_src).resolve())
            args = ["--runs", "50", "--warmup", "5"]
        elif method == "before":
            args = ["--rounds", "1", "--runs", "50", "--warmup", "5"]
        else:
            args = []  # the defaults
            env["PYTHONPATH"] = str(ROOT)
        t0 = time.perf_counter()
        # cwd: a folder without gram_tf, so PYTHONPATH decides which code runs (`-m` puts cwd first)
        proc = subprocess.run([sys.executable, "-m", "gram_tf.cli", "bench", *common, *args], capture_output=True,
                              text=True, env=env, cwd=tmp)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"error: gram-tf bench ({method}) failed: {proc.stderr.strip()[-300:]}")
        with open(out, newline="") as fh:
            rows = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
        if evaluate:
            from gram_tf.report import load_results
            from gram_tf.report.stats import select_auto

            auto = list(select_auto(load_results([out]), max_drop=0.01).values())
            rows["_auto"] = Path(auto[0]["path"]).name if auto else ""
        from gram_tf.report import load_results
        from gram_tf.report.stats import noise_warning

        rows["_warning"] = noise_warning(load_results([out]), BenchConfig.max_noise_pct, BenchConfig.max_busy_cores) or ""
        return rows, wall


def _f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def truth_auto(bench_rows, ref, fp32) -> str | None:
    """The files the truth calls fastest within 1 pp of fp32 (all within 5 % of the fastest), by name."""
    acc = {k: _f(r.get("accuracy")) for k, r in bench_rows.items() if not k.startswith("_")}
    if acc.get(fp32) is None:
        return None
    speed = {**ref, fp32: 1.0}
    ok = [k for k, a in acc.items() if a is not None and a >= acc[fp32] - 0.01 - 1e-9]
    best = max(speed[k] for k in ok)
    return " | ".join(sorted(k for k in ok if speed[k] >= best / 1.05))


def inversions(pairs) -> int:
    """Pairs of files the truth orders one way (by more than 5 %) and the bench the other."""
    bad = 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            (ta, ba), (tb, bb) = pairs[i], pairs[j]
            if abs(ta / tb - 1) > 0.05 and (ta > tb) != (ba > bb):
                bad += 1
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", action="append", required=True, help="NAME=DIR of .tflite artifacts (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--burners", type=int, default=1, help="busy-looping processes beside the bench")
    ap.add_argument("--truth-rounds", type=int, default=15)
    ap.add_argument("--truth-runs", type=int, default=20)
    ap.add_argument("--before-src", default=None, help="a checkout of the code before rounds (its repository root)")
    ap.add_argument("--conditions", default="quiet,burner")
    ap.add_argument("--repeats", type=int, default=1, help="times each (condition, method) is benched, interleaved")
    ap.add_argument("--out", default="bench_trust")
    ap.add_argument("--eval", action="store_true", help="evaluate too, and compare the auto choices (1 pp)")
    args = ap.parse_args(argv)
    sets = {}
    for spec in args.set:
        name, _, folder = spec.partition("=")
        files = sorted(Path(folder).glob("*.tflite"))
        if not files:
            raise SystemExit(f"error: --set {spec}: no .tflite files in {folder}")
        sets[name] = (Path(folder).resolve(), [f.resolve() for f in files])
    before_commit = None
    if args.before_src:
        before_commit = subprocess.run(["git", "-C", args.before_src, "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip() or None
    rows, summary = [], []
    first_files = next(iter(sets.values()))[1]
    fresh = fresh_process_cost(fp32_of(first_files), args.threads)
    for name, (folder, files) in sets.items():
        fp32 = fp32_of(files).name
        t_first = truth(files, args.threads, args.truth_rounds, args.truth_runs)
        runs = {}
        for rep in range(args.repeats):  # conditions and methods interleaved, so drift hits them alike
            for condition in args.conditions.split(","):
                burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.burners)] \
                    if condition == "burner" else []
                try:
                    time.sleep(0.5 if burners else 0.0)
                    for method in ("before", "after"):
                        runs.setdefault((condition, method), []).append(
                            bench(folder, args.threads, method, args.before_src, args.eval))
                finally:
                    for p in burners:
                        p.kill()
                        p.wait()
        t_last = truth(files, args.threads, args.truth_rounds, args.truth_runs)
        ref = {k: float(np.sqrt(t_first[k][1] * t_last[k][1])) for k in t_first}  # geometric mean of both
        truth_err = [abs(t_first[k][1] / t_last[k][1] - 1) * 100 for k in t_first if k != fp32]
        summary.append({"set": name, "condition": "quiet", "method": "truth (first vs last)", "files": len(files),
                        "repeats": 1, "mean_abs_error_pct": round(float(np.mean(truth_err)), 1),
                        "max_abs_error_pct": round(float(np.max(truth_err)), 1), "inversions": None,
                        "truth_in_ci": None, "noise_pct": None, "busy_cores": None, "noise_warning": None, "auto": None,
                        "truth_auto": None, "wall_s": None})
        for (condition, method), repeats in runs.items():
            errs, flips, inside, n_ci, noises, busies, warned, autos, walls = [], [], 0, 0, [], [], 0, [], []
            for rep, (bench_rows, wall) in enumerate(repeats):
                pairs = []
                for f in files:
                    if f.name == fp32:
                        continue
                    r = bench_rows[f.name]
                    sp, lo, hi = _f(r.get("speedup_vs_fp32")), _f(r.get("speedup_ci_low")), _f(r.get("speedup_ci_high"))
                    err = (sp / ref[f.name] - 1) * 100
                    errs.append(abs(err))
                    pairs.append((ref[f.name], sp))
                    in_ci = None if lo is None else bool(lo <= ref[f.name] <= hi)
                    inside, n_ci = inside + bool(in_ci), n_ci + (in_ci is not None)
                    rows.append({"set": name, "condition": condition, "method": method, "repeat": rep, "file": f.name,
                                 "threads": args.threads, "truth_speedup": round(ref[f.name], 4),
                                 "truth_p50_ms": round(t_first[f.name][0], 4),
                                 "bench_p50_ms": _f(r.get("latency_ms_p50")), "bench_speedup": sp,
                                 "speedup_ci_low": lo, "speedup_ci_high": hi, "truth_in_ci": in_ci,
                                 "error_pct": round(err, 1), "noise_pct": _f(r.get("noise_pct")),
                                 "busy_cores": _f(r.get("busy_cores"))})
                flips.append(inversions(pairs))
                noises += [x for x in [_f(bench_rows[fp32].get("noise_pct"))] if x is not None]
                busies += [x for x in [_f(bench_rows[fp32].get("busy_cores"))] if x is not None]
                warned += bool(bench_rows["_warning"])
                autos.append(bench_rows.get("_auto") or "")
                walls.append(wall)
            summary.append({"set": name, "condition": condition, "method": method, "files": len(files),
                            "repeats": len(repeats), "mean_abs_error_pct": round(float(np.mean(errs)), 1),
                            "max_abs_error_pct": round(float(np.max(errs)), 1), "inversions": sum(flips),
                            "truth_in_ci": f"{inside}/{n_ci}" if n_ci else None,
                            "noise_pct": round(max(noises), 1) if noises else None,
                            "busy_cores": round(max(busies), 2) if busies else None,
                            "noise_warning": f"{warned}/{len(repeats)}" if method == "after" else None,
                            "auto": " | ".join(f"{a} x{autos.count(a)}" for a in dict.fromkeys(autos)),
                            "truth_auto": truth_auto(repeats[0][0], ref, fp32), "wall_s": round(float(np.mean(walls)), 1)})
    path = write_results(args.out, rows)
    write_results(f"{args.out}.summary", summary)
    meta = Path(path).with_suffix(".json")
    data = json.loads(meta.read_text())
    data["environment"].update(before=("old code at " + str(before_commit)) if before_commit else "current code, --rounds 1",
                               burners=args.burners, **fresh)
    meta.write_text(json.dumps(data, indent=1))
    from gram_tf.table import format_table

    print(format_table(summary))
    print(f"a fresh worker process per visit would cost {fresh['fresh_worker_s']} s and "
          f"{fresh['fresh_worker_rss_mb']} MB each")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
