"""Every block of measured numbers in README.md and docs/*.md, generated from benchmarks/results/*.

    python tools/docs_tables.py            # rewrite every block in place
    python tools/docs_tables.py --check    # exit 1 naming each block that differs (tests/test_docs_tables.py)

A block is the text between `<!-- table: NAME -->` and `<!-- /table -->` (a table with the line naming
the machine it was measured on) or between `<!-- value: NAME -->` and `<!-- /value -->` (a number
inside a sentence). BLOCKS below holds one entry per block: the file, the block's name, the results
files it reads and the function that turns their rows into markdown. Edit a number in the results
file (or rerun the benchmark), never in the docs.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from gram_tf.report import VARIANT_ORDER  # noqa: E402

BLOCK = re.compile(r"(<!-- (table|value): ([\w.-]+) -->)(.*?)(<!-- /\2 -->)", re.S)
# the SIMD flags worth naming when a machine is described (int8 speed depends on them)
ISA_SHOWN = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


# ---- reading results files -------------------------------------------------------------------------

def _num(v):
    if not isinstance(v, str):
        return v
    try:
        return int(v) if re.fullmatch(r"-?\d+", v) else float(v)
    except ValueError:
        return v


@cache
def rows(name: str) -> tuple[dict, ...]:
    """The rows of results file NAME: NAME.csv, else NAME.json's rows (numbers as numbers)."""
    path = RESULTS / f"{name}.csv"
    if path.is_file():
        with path.open(newline="") as f:
            return tuple({k: _num(v) for k, v in r.items()} for r in csv.DictReader(f))
    data = load_json(f"{name}.json")
    return tuple(data["rows"] if isinstance(data, dict) else data)


@cache
def load_json(file: str):
    path = RESULTS / file
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing; rerun the benchmark that writes it (benchmarks/results/README.md)")
    return json.loads(path.read_text())


def _isa_list(isa) -> list[str]:
    if not isa:
        return []
    flags = set(isa.split("+") if isinstance(isa, str) else isa)
    return [f for f in ISA_SHOWN if f in flags]


@cache
def environment(name: str) -> dict:
    """What the results files of run NAME record about the machine: cpu, cores, isa (list), date,
    command, wall_s. Read from what exists, later sources filling gaps: NAME.json's environment,
    NAME.env.json (older runs), NAME.peak.json's CPU flags, the rows' own cpu / isa / cores columns."""
    env: dict = {}

    def fill(d: dict):
        for k, v in d.items():
            if v not in (None, "", []) and env.get(k) in (None, "", []):
                env[k] = v

    for file in (f"{name}.json", f"{name}.env.json"):
        if (RESULTS / file).is_file():
            d = load_json(file)
            if isinstance(d, dict):
                fill(d.get("environment", d if file.endswith(".env.json") else {}))
    for peak_file in (f"{name}.peak.json", f"{name}.json"):
        peak = load_json(peak_file) if (RESULTS / peak_file).is_file() else None
        peak = peak.get("litert", peak) if isinstance(peak, dict) else None  # peak_runtimes.json: both runtimes
        if not isinstance(peak, dict) or not isinstance(peak.get("cpu"), dict):
            continue
        fill({"cpu": peak["cpu"]["cpu"], "isa": peak["cpu"]["flags"], "cores": peak.get("cores"),
              "date": peak.get("measured_at", "").replace("T", " ")[:16]})
    data = load_json(f"{name}.json") if (RESULTS / f"{name}.json").is_file() else None
    if (RESULTS / f"{name}.csv").is_file() or isinstance(data, list) or (isinstance(data, dict) and "rows" in data):
        r = rows(name)
        if r:
            fill({k: r[0].get(k) for k in ("cpu", "isa", "cores")})
    env["isa"] = _isa_list(env.get("isa"))
    return env


def machine(name: str) -> str:
    """'2-core AMD EPYC (avx2, fma, f16c)' from run NAME's environment."""
    env = environment(name)
    isa = ", ".join(env["isa"]) if env["isa"] else "ISA flags not recorded"
    cpu = env.get("cpu", "CPU not recorded").replace("(R)", "")
    return f"{env.get('cores', '?')}-core {cpu} ({isa})"


def link(up: str, file: str) -> str:
    return f"[`{file}`]({up}benchmarks/results/{file})"


def caption(up: str, names: list[str], threads: str) -> str:
    """The line above a generated table: machine, threads, date and results files, one run per machine."""
    by_machine: dict[str, list[str]] = {}
    for n in names:
        by_machine.setdefault(machine(n), []).append(n)
    if len(by_machine) > 1:
        raise SystemExit(f"error: {', '.join(names)} were measured on different machines "
                         f"({' / '.join(by_machine)}); split the table per machine in tools/docs_tables.py")
    dates = sorted({environment(n).get("date") or "date not recorded" for n in names})
    files = ", ".join(link(up, next(f for f in (f"{n}.csv", f"{n}.ranges.csv", f"{n}.json") if (RESULTS / f).is_file()))
                      for n in names)
    return f"*Measured on a {next(iter(by_machine))}, {threads}; {', '.join(dates)}; {files}.*"


def md_table(headers: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def pick(name: str, **match) -> dict:
    """The one row of NAME whose columns equal `match` (an error when there is none or several)."""
    found = [r for r in rows(name) if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise SystemExit(f"error: {name}: {len(found)} rows match {match}, expected 1")
    return found[0]


def minsec(s: float) -> str:
    m, s = divmod(round(s), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def rng(values, fmt="{:.2f}", unit="x") -> str:
    """'0.96-1.09x'; 'a to b' when the numbers carry a sign."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return f"{lo}{unit}" if lo == hi else f"{lo}{' to ' if '+' in fmt else '-'}{hi}{unit}"


def mb(b) -> str:
    return f"{b / 1e6:.2f} MB"


# ---- the quickstart (README, docs/study.md) --------------------------------------------------------

def _quickstart_label(r: dict) -> str:
    if r["variant"] == "keras":
        return "Keras (TF)"
    recipe = r.get("int8_recipe")
    return f"{r['variant']} ({recipe})" if recipe and recipe != "minmax" else r["variant"]


def quickstart_table(up: str) -> str:
    one = [r for r in rows("quickstart") if r["threads"] == 1 and (r["variant"] != "keras" or not r["sparsity_target"])]
    one.sort(key=lambda r: (r["variant"] == "keras", r["sparsity_target"], VARIANT_ORDER.index(r["variant"])))
    ci = all(isinstance(r.get("latency_ms_ci_low"), float) for r in one)

    def p50(r):
        ms = f"{r['latency_ms_p50']:.2f}"
        return f"{ms} [{r['latency_ms_ci_low']:.2f}, {r['latency_ms_ci_high']:.2f}]" if ci else ms

    def speedup(r):
        x = r["speedup_vs_fp32"]
        if ci and isinstance(r.get("speedup_ci_low"), float):
            return f"{x:.2f}× [{r['speedup_ci_low']:.2f}, {r['speedup_ci_high']:.2f}]"
        return f"{x:.2f}×" if ci else f"{x:.2f}"

    headers = ["sparsity", "variant", "accuracy", "size", "zip size", "p50 ms [95% CI]" if ci else "p50 ms",
               "images/s", "speed-up vs fp32 [95% CI]" if ci else "speed-up vs fp32"]
    body = [[f"{r['sparsity_target']:g}", _quickstart_label(r), f"{r['accuracy']:.3f}", mb(r["size_bytes"]),
             mb(r["zip_bytes"]) if r.get("zip_bytes") not in (None, "") else "-", p50(r),
             f"{r['images_per_s']:.0f}", speedup(r)] for r in one]
    rounds = {r.get("rounds") for r in one} - {None, ""}
    timing = f"1 thread, {rounds.pop()} timing rounds" if len(rounds) == 1 else "1 thread"
    return "\n" + caption(up, ["quickstart"], timing) + "\n\n" + md_table(headers, body) + "\n"


def _qs(variant: str, sparsity: float, threads: int = 1) -> dict:
    return pick("quickstart", variant=variant, sparsity_target=sparsity, threads=threads)


def quickstart_wall(up: str) -> str:
    env = environment("quickstart")
    return f"{minsec(env['wall_s'])} on a {machine('quickstart')}"


def quickstart_smaller(up: str) -> str:
    """'9.1x smaller than fp32 by zip size, ... 11.1x'."""
    fp32 = _qs("fp32", 0.0)["zip_bytes"]
    return (f"Pruned + int8 is {fp32 / _qs('int8', 0.5)['zip_bytes']:.1f}x smaller than fp32 by zip size, pruned + "
            f"`int8-per-tensor` {fp32 / _qs('int8-per-tensor', 0.5)['zip_bytes']:.1f}x")


def quickstart_pruning(up: str) -> str:
    """The headline's pruning finding, from the same quickstart rows."""
    f0, f5, i0, i5 = _qs("fp32", 0.0), _qs("fp32", 0.5), _qs("int8", 0.0), _qs("int8", 0.5)
    body = [["pruning is a size technique here",
             f"50 % sparsity leaves the `.tflite` as big as before ({mb(f0['size_bytes'])} fp32, "
             f"{mb(i0['size_bytes'])} int8 -> {mb(i5['size_bytes'])} pruned int8: zeros are stored) and "
             f"shrinks the zip ({mb(f0['zip_bytes'])} -> {mb(f5['zip_bytes'])} fp32; pruned + int8 "
             f"{mb(i5['zip_bytes'])}, {f0['zip_bytes'] / i5['zip_bytes']:.1f}x smaller than fp32, with the "
             f"channels the pruned model never reads zeroed by the int8 recipe); p50 latency fp32 "
             f"{f0['latency_ms_p50']:.2f} -> {f5['latency_ms_p50']:.2f} ms, int8 {i0['latency_ms_p50']:.2f} -> "
             f"{i5['latency_ms_p50']:.2f} ms (the quickstart, 96 px, 1 thread, one study run)"]]
    return "\n" + caption(up, ["quickstart"], "1 thread") + "\n\n" + md_table(["finding", "measured"], body) + "\n"


def quickstart_ci(up: str) -> str:
    """How wide the quickstart's accuracy CIs are and whether any variant differs from fp32 (the report's
    bootstrap and McNemar on the rows' per-image `correct`)."""
    from gram_tf.report.stats import bootstrap_ci, mcnemar

    one = [r for r in rows("quickstart") if r["threads"] == 1]
    correct = {id(r): str(r["correct"]).zfill(r["n_test"]) for r in one}  # read as a number: leading zeros back
    half = [100 * (hi - lo) / 2 for lo, hi in (bootstrap_ci(correct[id(r)]) for r in one)]
    ref = {r["sparsity_target"]: correct[id(r)] for r in one if r["variant"] == "fp32"}
    p = {f"{r['variant']} at {r['sparsity_target']:g}": mcnemar(ref[r["sparsity_target"]], correct[id(r)])["p_value"]
         for r in one if r["variant"] not in ("fp32", "keras")}
    sig = [k for k, v in p.items() if v < 0.05]
    verdict = (f"so {', '.join(sig)} differ{'s' if len(sig) == 1 else ''} significantly from fp32" if sig else
               "so none of the accuracy differences from fp32 is significant")
    return (f"The 95 % bootstrap CIs of accuracy on {one[0]['n_test']} test images are "
            f"±{min(half):.0f} to ±{max(half):.0f} pp (McNemar against fp32: p >= {min(p.values()):.2f}), "
            f"{verdict}")


# ---- the test suite's time (README, docs/development.md) -------------------------------------------

def ci_time(up: str) -> str:
    env, run = environment("ci"), load_json("ci.json")["rows"][0]
    skips = "" if run.get("skipped") else ", none skipped"
    return (f"{minsec(run['wall_s'])} on a {machine('ci')} ({run['summary']}{skips}; clean clone, "
            f"{env['date'][:10]}; {link(up, 'ci.json')})")


# ---- the x86 headline (README): one table per machine ----------------------------------------------

def _int8(backbone: str, variant: str, threads: int = 2, runtime: str = "litert") -> dict:
    return pick("int8", backbone=backbone, variant=variant, threads=threads, runtime=runtime)


THREE_CNNS = ("mobilenet_v2_100", "resnet50", "efficientnet_lite0")


def headline_amd(up: str) -> str:
    x = lambda b, v: f"{_int8(b, v)['speedup_vs_fp32']:.2f}x"  # noqa: E731
    peak = load_json("int8.peak.json")
    deit = {v: _int8("deit_tiny", v) for v in ("fp32", "int8", "int8-fast")}
    v3 = {v: _int8("mobilenet_v3_small", v) for v in ("fp32", "int8", "int8-fast")}
    backbones = sorted({r["backbone"] for r in rows("int8")})
    pt = [(_int8(b, "int8-per-tensor"), _int8(b, "int8")) for b in backbones]
    n_test = rows("int8")[0]["n_test"]
    body = [
        ["int8 is about as fast as fp32 here, not 3x faster",
         f"full int8 {' / '.join(x(b, 'int8') for b in THREE_CNNS)} of fp32 on MobileNetV2 1.0 / ResNet50 / "
         f"EfficientNet-Lite0; `int8-fast` {' / '.join(x(b, 'int8-fast') for b in THREE_CNNS)}. Why: XNNPACK's AVX2 "
         f"int8 GEMM widens to int16 and multiplies with VPMADDWD, the same rate as fp32 FMA; measured GEMM peak "
         f"{peak['peak']['fp32@2']} fp32 vs {peak['peak']['int8@2']} int8 GMAC/s (ONNX Runtime's VPMADDUBSW path: "
         f"{peak['onnxruntime']['peak']['int8@2']})"],
        ["int8 fallbacks cost more than int8 saves; `int8-fast` fixes them",
         f"ops the delegate refuses in int8 split the graph: DeiT-tiny int8 {deit['int8']['speedup_vs_fp32']:.2f}x of "
         f"fp32 ({deit['int8']['partitions']} partitions) -> `int8-fast` {deit['int8-fast']['speedup_vs_fp32']:.2f}x "
         f"({deit['int8-fast']['partitions']} partition{'s' if deit['int8-fast']['partitions'] != 1 else ''}); "
         f"MobileNetV3-Small {v3['int8']['speedup_vs_fp32']:.2f}x -> {v3['int8-fast']['speedup_vs_fp32']:.2f}x"],
        ["DeiT-tiny",
         f"fp32 {deit['fp32']['images_per_s']:.1f} img/s, `int8-fast` {deit['int8-fast']['images_per_s']:.1f} img/s "
         f"({100 * (deit['int8-fast']['accuracy'] - deit['fp32']['accuracy']):+.1f} pp), about "
         f"{deit['int8-fast']['images_per_s'] / 6:.0f}x the study's 6 img/s for int8 on a phone; 100 img/s would need "
         f"{100 * deit['fp32']['macs'] / 1e9:.0f} GMAC/s, above XNNPACK's measured peaks"],
        ["per-tensor vs per-channel int8",
         f"same speed ({' / '.join(x(b, 'int8-per-tensor') for b in THREE_CNNS)} vs "
         f"{' / '.join(x(b, 'int8') for b in THREE_CNNS)} of fp32 on the three CNNs above), files "
         f"{rng([100 * (1 - t['size_bytes'] / c['size_bytes']) for t, c in pt], '{:.0f}', ' %')} smaller, accuracy "
         f"{rng([100 * (t['accuracy'] - c['accuracy']) for t, c in pt], '{:+.1f}', ' pp')} of per-channel on the "
         f"{len(pt)} random backbones of `int8.csv` ({n_test} test images)"],
    ]
    return ("\n" + caption(up, ["int8"], "LiteRT 2.3 with XNNPACK, batch 1, 224 px, 2 threads") + "\n\n"
            + md_table(["finding", "measured"], body) + "\n")


def headline_recipes(up: str) -> str:
    nets = ("mobilenet_v2_035", "mobilenet_v2_050", "mobilenet_v1_025")

    def col(recipe, column):
        return " / ".join(f"{pick('int8_recipes', backbone=b, sparsity_target=0.0, variant='int8-per-tensor', recipe=recipe)[column]:.2f}"
                          for b in nets)

    body = [["per-tensor int8 on real weights",
             f"the converter's per-tensor int8 (minmax) predicts one class on MobileNetV2-0.35 / 0.5 / v1-0.25 "
             f"({col('minmax', 'test_accuracy')} vs fp32 {col('minmax', 'fp32_accuracy')}, real micrographs); with "
             f"gram_tf's default recipe (cross-layer equalization + bias correction + percentile calibration) "
             f"{col('cle+bc+percentile', 'test_accuracy')}, agreement with Keras {col('cle+bc+percentile', 'agreement_vs_keras')} "
             f"([quantization]({up}docs/quantization.md))"]]
    return ("\n" + caption(up, ["int8_recipes"], "accuracy only (no timing)") + "\n\n"
            + md_table(["finding", "measured"], body) + "\n")


def _paper2_rows() -> dict[str, dict[str, dict]]:
    """backbone -> variant -> 2-thread LiteRT row of the second paper's eight architectures (the
    backbones of configs/transformers.yaml), from the p2_* runs (same machine type)."""
    import yaml

    wanted = yaml.safe_load((ROOT / "configs" / "transformers.yaml").read_text())["backbones"]
    out: dict[str, dict[str, dict]] = {b: {} for b in wanted}
    for name in PAPER2:
        for r in rows(name):
            if r["backbone"] in wanted and r["runtime"] == "litert" and r["threads"] == 2:
                out[r["backbone"]][r["variant"]] = r
    missing = [b for b in wanted if not out[b]]
    if missing:
        raise SystemExit(f"error: no rows for {', '.join(missing)} in {', '.join(PAPER2)}")
    return out


PAPER2 = ("p2_224_peers", "p2_224", "p2_mobilevit")


def headline_intel(up: str) -> str:
    p = _paper2_rows()

    def x(b, v):
        return p[b][v]["speedup_vs_fp32"]

    def each(bs, fmt):
        return ", ".join(fmt(b) for b in bs)

    wins = sorted((b for b in p if x(b, "int8") > 1), key=lambda b: -x(b, "int8"))
    falls = sorted((b for b in p if b not in wins), key=lambda b: -x(b, "int8"))
    parts = [p[b]["int8"]["partitions"] for b in falls]
    peak = load_json("p2_224_peers.peak.json")["peak"]
    body = [["the second paper's eight architectures",
             f"XNNPACK's int8 GEMM peaks at {peak['int8@2'] / peak['fp32@2']:.0f}x fp32 here "
             f"({peak['fp32@2']:.0f} fp32 vs {peak['int8@2']:.0f} int8 GMAC/s, `p2_224_peers.peak.json`); full int8 beats "
             f"fp32 only for {each(wins, lambda b: f'{b} ({x(b, INT8):.2f}x)')}; LayerNorm, attention and GELU fall "
             f"out of the delegate ({min(parts)}-{max(parts)} partitions: {each(falls, lambda b: f'{b} {x(b, INT8):.2f}x')} "
             f"of fp32); `int8-fast` is {rng([x(b, 'int8-fast') for b in falls], '{:.1f}')} faster than fp32 on those "
             f"{len(falls)} ({each(falls, lambda b: f'{b} {p[b][FP32][P50]:.3g} -> {p[b][FAST][P50]:.2g} ms')}) "
             f"([transformers]({up}docs/transformers.md#measured-the-second-papers-eight-architectures))"]]
    return ("\n" + caption(up, list(PAPER2), "LiteRT 2.3 with XNNPACK, batch 1, 2 threads") + "\n\n"
            + md_table(["finding", "measured"], body) + "\n")


INT8, FP32, FAST, P50 = "int8", "fp32", "int8-fast", "latency_ms_p50"


# ---- backbone counts ---------------------------------------------------------------------------------

SWEEP = ("int8_all", "int8_rest")
SWEEP_FILES = tuple(f"{n}.csv" for n in SWEEP)


def registry_count(up: str) -> str:
    from gram_tf.models import list_backbones

    swept = {r["backbone"] for n in SWEEP for r in rows(n)}
    return f"{len(swept)} of the {len(list_backbones())} registered backbones"


# ---- docs/performance-x86.md -------------------------------------------------------------------------

def int8_table(up: str) -> str:
    labels = {"ort-fp32": "ORT fp32", "ort-int8": "ORT int8"}
    by = {(r["backbone"], r["variant"], r["threads"]): r for r in rows("int8")}
    order = list(dict.fromkeys(r["backbone"] for r in rows("int8")))
    variants = list(dict.fromkeys(r["variant"] for r in rows("int8")))
    body = []
    for b in order:
        for v in variants:
            one, two = by.get((b, v, 1)), by[(b, v, 2)]
            label = labels.get(v, v) + (f" ({two['fast_choice']})" if two.get("fast_choice") else "")
            body.append([b, label, f"{two['accuracy']:.3f}", f"{two['size_bytes'] / 1e6:.1f}",
                         f"{one['latency_ms_p50']:.1f}" if one else "-", f"{two['latency_ms_p50']:.1f}",
                         f"{two['images_per_s']:.0f}", f"{two['speedup_vs_fp32']:.2f}x", f"{two['gmacs_per_s']:.0f}",
                         f"{two['frac_of_peak']:.2f}", two["partitions"] if two.get("partitions") != "" else "-"])
    headers = ["backbone", "runtime / variant", "acc", "MB", "ms 1t", "ms 2t", "img/s 2t", "vs fp32 2t", "GMAC/s 2t",
               "of peak 2t", "partitions"]
    return ("\n" + caption(up, ["int8"], "LiteRT 2.3 / ONNX Runtime, batch 1, 224 px, 1 and 2 threads") + "\n\n"
            + md_table(headers, body) + "\n")


def _sweep() -> dict[str, dict[str, dict]]:
    """backbone -> variant -> 2-thread LiteRT row of the registry sweep (a later file wins for a backbone)."""
    out: dict[str, dict[str, dict]] = {}
    for name in SWEEP:
        per_file: dict[str, dict[str, dict]] = {}
        for r in rows(name):
            if r["runtime"] == "litert" and r["threads"] == 2:
                per_file.setdefault(r["backbone"], {})[r["variant"]] = r
        out.update(per_file)
    return out


def sweep_table(up: str) -> str:
    from gram_tf.metrics import within_drop

    sweep, body = _sweep(), []
    for name in sorted(sweep, key=lambda b: (sweep[b]["fp32"]["macs"], b)):
        v = sweep[name]
        ms = {k: r["latency_ms_p50"] for k, r in v.items()}
        acc = {k: r["accuracy"] for k, r in v.items()}
        speed = {k: ms["fp32"] / ms[k] for k in ("int8", "int8-fast") if k in v}
        ok = {k: x for k, x in speed.items() if within_drop(acc["fp32"], acc[k], 0.01)}
        best = max(ok, key=ok.get) if ok else None

        def cell(k):
            return f"{ms[k]:.1f} ({100 * (acc[k] - acc['fp32']):+.1f})" if k in v else "-"

        body.append([name, f"{v['fp32']['macs'] / 1e9:.2f}", f"{ms['fp32']:.1f}", cell("int8"), cell("int8-fast"),
                     " / ".join(f"{speed[k]:.2f}x" if k in speed else "-" for k in ("int8", "int8-fast")),
                     f"{ok[best]:.2f}x ({best})" if best else "none within 1 pp",
                     " → ".join(str(v[k]["partitions"]) if k in v else "-" for k in ("int8", "int8-fast")),
                     v.get("int8-fast", {}).get("fast_choice") or "-"])
    headers = ["backbone", "GMAC", "fp32 ms", "int8 ms (acc Δ pp)", "int8-fast ms (acc Δ pp)", "int8 / int8-fast vs fp32",
               "best int8 within 1 pp", "partitions int8 → int8-fast", "int8-fast candidate (float ops)"]
    return ("\n" + caption(up, list(SWEEP), "LiteRT 2.3, batch 1, 224 px, 2 threads") + "\n\n"
            + md_table(headers, body) + "\n")


def sweep_speed(up: str) -> str:
    sweep = _sweep()
    fast = [v["fp32"]["latency_ms_p50"] / v["int8-fast"]["latency_ms_p50"] for v in sweep.values() if "int8-fast" in v]
    return (f"`int8-fast` is at least as fast as fp32 on {sum(x >= 1 for x in fast)} of {len(sweep)} backbones in "
            f"this timing, {min(fast):.2f}x to {max(fast):.2f}x of fp32")


# ---- docs/performance-x86.md: GEMM peaks, the int8 graph's fallbacks, the peak files --------------

def gemm_peak_table(up: str) -> str:
    d = load_json("peak_runtimes.json")
    lt, ort, th = d["litert"]["peak"], d["onnxruntime"]["peak"], d["litert"]["theoretical"]
    ghz = th["1"]["ghz_nominal"]

    def pair(p, kind):
        return f"{p[f'{kind}@1']:.1f} / {p[f'{kind}@2']:.1f}"

    body = [["LiteRT / XNNPACK", pair(lt, "fp32"), pair(lt, "int8")],
            ["ONNX Runtime (MLAS, QDQ u8 x s8)", pair(ort, "fp32"), pair(ort, "int8")],
            [f"ISA estimate at the {ghz:.2f} GHz nominal clock",
             f"{th['1']['fp32_gmacs']:.1f} / {th['2']['fp32_gmacs']:.1f}",
             f"{th['1']['int8_gmacs']:.1f} / {th['2']['int8_gmacs']:.1f} (VPMADDUBSW)"]]
    return ("\n" + caption(up, ["peak_runtimes"], d["litert"]["method"]) + "\n\n"
            + md_table(["runtime", "fp32 GMAC/s 1t / 2t", "int8 GMAC/s 1t / 2t"], body) + "\n")


def _peaks() -> dict[str, dict]:
    """run -> its LiteRT peak dict (with 'onnxruntime' when measured), for every run with a peak file."""
    both = load_json("peak_runtimes.json")
    out = {"peak_runtimes": {**both["litert"], "onnxruntime": both["onnxruntime"]}}
    for path in sorted(RESULTS.glob("*.peak.json")):
        out[path.name[: -len(".peak.json")]] = load_json(path.name)
    return out


def peak_runs(up: str) -> str:
    """The int8 / fp32 GEMM ceiling of every peak file measured on int8.csv's machine."""
    here = machine("int8")
    runs = {n: p for n, p in _peaks().items() if machine(n) == here}
    r = {n: p["peak"]["int8@2"] / p["peak"]["fp32@2"] for n, p in runs.items()}
    ort = [p["onnxruntime"]["peak"]["int8@2"] / p["onnxruntime"]["peak"]["fp32@2"] for p in runs.values() if "onnxruntime" in p]
    each = ", ".join(f"{p['peak']['fp32@2']} / {p['peak']['int8@2']} (`{n}`)" for n, p in runs.items())
    return (f"2-thread XNNPACK GEMM peaks fp32 / int8 GMAC/s over the {len(runs)} peak files of this machine: {each}; "
            f"int8 is {rng(r.values())} of fp32 in XNNPACK and {rng(ort)} in ONNX Runtime")


def int8_fallbacks(up: str) -> str:
    """What full int8 looked like in int8.csv's run, from int8-fast's own profile (int8.fast.json)."""
    fast = load_json("int8.fast.json")
    body = []
    for b, v in fast.items():
        ops = ", ".join(f"{op} {n}" for op, n in sorted(v["int8_fallback_ops"].items(), key=lambda kv: -kv[1]))
        w = v["whole_model_ms"]
        body.append([b, v["int8_partitions"], ops, f"{v['fp32_op_sum_ms']:.1f} / {v['int8_op_sum_ms']:.1f}",
                     f"{w['fp32']:.1f} / {w['full-int8']:.1f}"])
    threads = {v["threads"] for v in fast.values()}.pop()
    headers = ["backbone", "full int8 partitions", "ops the delegate leaves to builtin kernels in int8 (nodes)",
               "sum of isolated ops ms fp32 / int8", "whole model ms fp32 / full int8"]
    return ("\n" + caption(up, ["int8"], f"LiteRT 2.3, batch 1, 224 px, {threads} threads, from `int8.fast.json`") + "\n\n"
            + md_table(headers, body) + "\n")


def int8_peak_line(up: str) -> str:
    p = load_json("int8.peak.json")
    return (f"fp32 {p['peak']['fp32@2']} / int8 {p['peak']['int8@2']} at 2 threads, ORT "
            f"{p['onnxruntime']['peak']['fp32@2']} / {p['onnxruntime']['peak']['int8@2']}")


def int8_resnet_peak(up: str) -> str:
    p = load_json("int8.peak.json")["peak"]
    f, i = _int8("resnet50", "fp32"), _int8("resnet50", "int8")
    return (f"This run's XNNPACK GEMM peak at 2 threads was {p['fp32@2']} fp32 vs {p['int8@2']} int8 GMAC/s, and "
            f"ResNet50 ran at {f['frac_of_peak']:.2f} (fp32) and {i['frac_of_peak']:.2f} (int8) of those peaks")


def drift(up: str) -> str:
    """The spread of per-round medians of one model in one process (int8.csv's round_p50_min / max)."""
    spread = [(r["round_p50_max"] / r["round_p50_min"] - 1, r) for r in rows("int8")
              if r["runtime"] == "litert" and isinstance(r.get("round_p50_min"), float)]
    x, r = max(spread, key=lambda t: t[0])
    mid = sorted(s for s, _ in spread)[len(spread) // 2]
    return (f"in `int8.csv` the per-round medians of one model in one process spread by {100 * mid:.0f} % (median "
            f"over its {len(spread)} LiteRT rows) and by up to {100 * x:.0f} % "
            f"({r['backbone']} {r['variant']}, {r['threads']} threads: {r['round_p50_min']:.1f}-{r['round_p50_max']:.1f} ms)")

def _selection_speed() -> dict[str, float]:
    """backbone -> fp32 / chosen candidate in int8-fast's own whole-model timing (the sweep's .fast.json)."""
    out = {}
    for name in SWEEP:
        for b, v in load_json(f"{name}.fast.json").items():
            w = v.get("whole_model_ms", {})
            if v.get("chosen") in w:
                out[b] = w["fp32"] / w[v["chosen"]]
    return out


def sweep_slow(up: str) -> str:
    """The backbones whose int8-fast is slower than fp32 in the sweep's timing and in its own selection."""
    sweep, sel = _sweep(), _selection_speed()
    speed = {b: v["fp32"]["latency_ms_p50"] / v["int8-fast"]["latency_ms_p50"] for b, v in sweep.items() if "int8-fast" in v}
    both = [b for b in speed if speed[b] < 1 and sel.get(b, 1) < 1]
    one = [b for b in speed if b not in both and (speed[b] < 1 or sel.get(b, 1) < 1)]
    fmt = lambda b: f"{b} ({speed[b]:.2f}x / {sel[b]:.2f}x)"  # noqa: E731
    gmac = max(sweep[b]["fp32"]["macs"] for b in both) / 1e9
    return (f"slower than fp32 in both timings (sweep / `int8-fast`'s selection, `whole_model_ms` in the sweep's "
            f"`.fast.json`) on {len(both)}, all at most {gmac:.2f} GMAC: {', '.join(fmt(b) for b in both)}; in one of "
            f"them on {len(one)}: {', '.join(fmt(b) for b in one)}")


def sweep_inaccurate(up: str) -> str:
    from gram_tf.metrics import within_drop

    sweep = _sweep()
    miss = [b for b, v in sweep.items()
            if not any(within_drop(v["fp32"]["accuracy"], v[k]["accuracy"], 0.01) for k in ("int8", "int8-fast") if k in v)]
    n_test = {r["n_test"] for n in SWEEP for r in rows(n)}
    return f"no int8 graph within 1 pp ({'/'.join(map(str, n_test))} test images) for {', '.join(sorted(miss))}"


def int8_fast_five(up: str) -> str:
    x = {b: _int8(b, "int8-fast")["speedup_vs_fp32"] for b in dict.fromkeys(r["backbone"] for r in rows("int8"))}
    return f"`int8.csv`: `int8-fast` {rng(x.values())} on the {len(x)} ({', '.join(f'{b} {v:.2f}x' for b, v in x.items())})"


def three_cnn_targets(up: str) -> str:
    x = lambda v: " / ".join(f"{_int8(b, v)['speedup_vs_fp32']:.2f}x" for b in THREE_CNNS)  # noqa: E731
    return f"{x('int8-fast')} (all `int8-fast`; full `int8` {x('int8')})"


def three_cnn_cause(up: str) -> str:
    p = load_json("int8.peak.json")
    r = {v: _int8("resnet50", v) for v in ("fp32", "int8-fast")}
    m = {v: _int8("mobilenet_v2_100", v) for v in ("fp32", "int8")}
    return (f"this run's XNNPACK GEMM peak at 2 threads was {p['peak']['fp32@2']} fp32 vs {p['peak']['int8@2']} int8 "
            f"GMAC/s, and ResNet50's fp32 graph ran at {r['fp32']['frac_of_peak']:.2f} of the fp32 peak, its `int8-fast` "
            f"at {r['int8-fast']['frac_of_peak']:.2f} of the int8 peak (ORT's u8 x s8 VPMADDUBSW path: "
            f"{p['onnxruntime']['peak']['int8@2']} int8 GMAC/s in the same run); MobileNetV2's int8 convolutions reach "
            f"{m['int8']['frac_of_peak']:.2f} of the int8 peak against {m['fp32']['frac_of_peak']:.2f} for fp32")


def deit_target(up: str, part: int = 0) -> str:
    """DeiT-tiny's row of the targets table: part 0 the measured cell, part 1 the cause."""
    d = {v: _int8("deit_tiny", v) for v in ("fp32", "int8-fast", "dynamic")}
    pp = lambda v: f"{100 * (d[v]['accuracy'] - d['fp32']['accuracy']):+.1f} pp"  # noqa: E731
    p = load_json("int8.peak.json")
    need = 100 * d["fp32"]["macs"] / 1e9
    return (f"{d['fp32']['images_per_s']:.1f} img/s (fp32; `int8-fast` {d['int8-fast']['images_per_s']:.1f} img/s at "
            f"{pp('int8-fast')}, `dynamic` {d['dynamic']['images_per_s']:.1f} at {pp('dynamic')}) | no | "
            f"{d['fp32']['macs'] / 1e9:.2f} GMAC per image: 100 img/s needs {need:.0f} GMAC/s, above XNNPACK's measured "
            f"peaks ({p['peak']['fp32@2']} fp32 / {p['peak']['int8@2']} int8 GMAC/s this run) and near ONNX Runtime's "
            f"int8 GEMM peak ({p['onnxruntime']['peak']['int8@2']})").split(" | no | ")[part]


def ort_target(up: str) -> str:
    lite = [x for x in rows("int8") if x["backbone"] == "resnet50" and x["threads"] == 2 and x["runtime"] == "litert"]
    ort = pick("int8", backbone="resnet50", variant="ort-int8", threads=2)
    best = max(lite, key=lambda x: x["images_per_s"])
    fp32 = pick("int8", backbone="resnet50", variant="fp32", threads=2, runtime="litert")
    drops = {x["backbone"]: 100 * (x["accuracy"] - pick("int8", backbone=x["backbone"], variant="fp32", threads=2,
                                                        runtime="litert")["accuracy"])
             for x in rows("int8") if x["variant"] == "ort-int8" and x["threads"] == 2}
    return (f"ORT int8 {ort['images_per_s']:.1f} img/s ({100 * (ort['accuracy'] - fp32['accuracy']):+.0f} pp) vs LiteRT's "
            f"{best['images_per_s']:.1f} on ResNet50; ORT's MinMax-calibrated int8 changed accuracy by "
            f"{', '.join(f'{b} {d:+.0f} pp' for b, d in drops.items())}")

def deit_base_rounds(up: str) -> str:
    f, k = (pick("deit_base_rounds", variant=v) for v in ("fp32", "int8-fast"))
    s = _sweep()["deit_base"]["int8-fast"]
    return (f"`int8-fast` {k['latency_ms_p50']:.1f} vs fp32 {f['latency_ms_p50']:.1f} ms, {k['speedup_vs_fp32']:.2f}x "
            f"(per-round medians {k['round_p50_min']:.0f}-{k['round_p50_max']:.0f} vs {f['round_p50_min']:.0f}-"
            f"{f['round_p50_max']:.0f} ms; {100 * (k['accuracy'] - f['accuracy']):+.1f} pp; {link(up, 'deit_base_rounds.csv')}); "
            f"the sweep's {s['speedup_vs_fp32']:.2f}x had `int8-fast` round medians of {s['round_p50_min']:.0f}-"
            f"{s['round_p50_max']:.0f} ms")


def tools_bought(up: str) -> str:
    sw = _sweep()

    def move(v, src):
        return f"from {v['int8']['speedup_vs_fp32']:.2f}x to {v['int8-fast']['speedup_vs_fp32']:.2f}x{src}"

    five = {b: {k: _int8(b, k) for k in ("fp32", "int8", "int8-fast")} for b in ("deit_tiny", "mobilenet_v3_small")}
    d = five["deit_tiny"]
    old = pick("deit_tiny", variant="fp32", sparsity_target=0.0, threads=2, runtime="litert")
    g = sw["deit_small_distilled"]
    pp = lambda v, k: f"{100 * (v[k]['accuracy'] - v['fp32']['accuracy']):+.1f} pp"  # noqa: E731
    return (f"DeiT-tiny int8 {move(d, '')} of fp32 ({d['int8']['partitions']} -> {d['int8-fast']['partitions']} "
            f"partitions, {pp(d, 'int8-fast')}); MobileNetV3-Small {move(five['mobilenet_v3_small'], '')} (`int8.csv`); "
            f"ConvNeXt-T {move(sw['convnext_tiny'], '')}, DeiT-S distilled {move(g, '')} and ViT-tiny "
            f"{move(sw['vit_tiny_16'], '')} (sweep); DeiT-tiny fp32 at 2 threads from {old['images_per_s']:.1f} img/s "
            f"(`deit_tiny.csv`, before the STRIDED_SLICE fix) to {d['fp32']['images_per_s']:.1f} img/s; with the accuracy "
            f"guard DeiT-S distilled's `int8-fast` is at {pp(g, 'int8-fast')} (full int8: {pp(g, 'int8')})")


def convnext_sweep(up: str) -> str:
    v = _sweep()["convnext_tiny"]
    return f"{v['int8']['partitions']} partitions, {v['int8']['speedup_vs_fp32']:.2f}x"

# ---- docs/transformers.md, docs/training.md --------------------------------------------------------

def paper2_table(up: str) -> str:
    from gram_tf.models import get_backbone

    p, body = _paper2_rows(), []
    for b in p:
        v, bb = p[b], get_backbone(b)
        # within 1 % int8-fast kept the full int8 graph (it adds only the float softmax): name int8
        same = abs(v["int8"]["speedup_vs_fp32"] / v["int8-fast"]["speedup_vs_fp32"] - 1) < 0.01
        best = "int8" if same else max(("int8", "int8-fast"), key=lambda k: v[k]["speedup_vs_fp32"])
        same = " (int8; int8-fast the same graph)" if same else f" ({best})"
        body.append([bb.family, b, v["fp32"]["input_size"], f"{bb.params / 1e6:.1f}M", f"{v['fp32']['macs'] / 1e9:.2f}",
                     f"{v['fp32']['latency_ms_p50']:.1f}",
                     *(f"{v[k]['latency_ms_p50']:.1f} ({v[k]['partitions']})" for k in ("int8", "int8-fast")),
                     f"{v[best]['speedup_vs_fp32']:.2f}x" + same,
                     " / ".join(f"{v[k]['accuracy']:.3f}" for k in ("fp32", "int8", "int8-fast"))])
    headers = ["architecture", "backbone", "input", "params", "GMAC", "fp32 ms", "int8 ms (partitions)",
               "int8-fast ms (partitions)", "fp32 / best int8", "accuracy fp32 / int8 / int8-fast"]
    return ("\n" + caption(up, list(PAPER2), "LiteRT 2.3 with XNNPACK, batch 1, 2 threads") + "\n\n"
            + md_table(headers, body) + "\n")

def deit_tiny_table(up: str) -> str:
    """The first DeiT-tiny run (before the graph fix and int8-fast): 1 and 2 threads per variant."""
    by = {(r["variant"], r["sparsity_target"], r["threads"]): r for r in rows("deit_tiny") if r["runtime"] == "litert"}
    labels = {("fp32", 0.0): "fp32", ("dynamic", 0.0): "dynamic", ("int8", 0.0): "int8 (per-channel)",
              ("int8-per-tensor", 0.0): "int8-per-tensor", ("int8-selective", 0.0): "int8-selective",
              ("int8", 0.5): "pruned 50 % + int8"}
    body = []
    for (v, s), label in labels.items():
        one, two = by[(v, s, 1)], by[(v, s, 2)]
        size = mb(one["size_bytes"]) + (f" ({mb(one['zip_bytes'])} zipped)" if s else "")
        body.append([label, size, f"{one['latency_ms_p50']:.1f} / {two['latency_ms_p50']:.1f}",
                     f"{one['images_per_s']:.1f} / {two['images_per_s']:.1f}"])
    return ("\n" + caption(up, ["deit_tiny"], "LiteRT 2.3, batch 1, 224 px, 1 and 2 threads") + "\n\n"
            + md_table(["variant", "size", "p50 ms 1t / 2t", "images/s 1t / 2t"], body) + "\n")


def deit_tiny_vs_study(up: str) -> str:
    r = [x for x in rows("deit_tiny") if x["runtime"] == "litert" and not x["sparsity_target"]]
    ips = lambda v: [x["images_per_s"] for x in r if x["variant"] == v]  # noqa: E731
    i8 = ips("int8") + ips("int8-per-tensor")
    slower = [x["speedup_vs_fp32"] for x in r if x["variant"] == "int8"]
    return (f"int8 here reaches {rng(i8, '{:.0f}', ' images/s')}, and fp32 {rng(ips('fp32'), '{:.0f}', ' images/s')}, "
            f"{max(ips('fp32')) / 6:.0f}x the study's best. On this x86 CPU int8 DeiT was "
            f"{rng([1 / x for x in slower], '{:.1f}')} *slower* than fp32")


def deit_tiny_now(up: str) -> str:
    f = {t: _int8("deit_tiny", "fp32", t) for t in (1, 2)}
    k = {t: _int8("deit_tiny", "int8-fast", t) for t in (1, 2)}
    return (f"DeiT-tiny fp32 runs at {f[1]['images_per_s']:.1f} / {f[2]['images_per_s']:.1f} images/s and `int8-fast` "
            f"(accuracy-guarded, {100 * (k[2]['accuracy'] - f[2]['accuracy']):+.1f} pp) at {k[1]['images_per_s']:.1f} / "
            f"{k[2]['images_per_s']:.1f} images/s (1 / 2 threads, {link(up, 'int8.csv')}), about "
            f"{k[2]['images_per_s'] / 6:.0f}x the study's int8 figure")


P2_VARIANT_ROWS = (  # (label, [(sparsity, variant), ...]) of the p2_variants table
    ("fp32 / fp16 / dynamic", [(0.0, "fp32"), (0.0, "fp16"), (0.0, "dynamic")]),
    ("int8 / int8-selective / int8-fast", [(0.0, "int8"), (0.0, "int8-selective"), (0.0, "int8-fast")]),
    ("int8-per-tensor (recipe `auto`)", [(0.0, "int8-per-tensor")]),
    ("qat-int8 (partial QAT)", [(0.0, "qat-int8")]),
    ("pruned 50 %: int8 / pqat-int8", [(0.5, "int8"), (0.5, "pqat-int8")]),
    ("int16x8", [(0.0, "int16x8")]),
)


def p2_variants_table(up: str) -> str:
    nets = list(dict.fromkeys((r["backbone"], r["input_size"]) for r in rows("p2_variants")))
    by = {(r["backbone"], r["sparsity"], r["variant"]): r for r in rows("p2_variants")}

    def cell(b, keys):
        out = []
        for s, v in keys:
            r = by[(b, s, v)]
            a = f"{r['top1_agreement']:.2f}" if r["ok"] in (True, "True") else "refused"
            out.append(a + (f" ({r['int8_recipe']})" if v == "int8-per-tensor" else ""))
        return " / ".join(out)

    body = [[label, *(cell(b, keys) for b, _ in nets)] for label, keys in P2_VARIANT_ROWS]
    return ("\n" + caption(up, ["p2_variants"], "top-1 agreement with the Keras model on 12 check images") + "\n\n"
            + md_table(["variant", *(f"{b} @{s}" for b, s in nets)], body) + "\n")


def _p2_line(name: str, backbone: str) -> str:
    from gram_tf.models import get_backbone

    v = {r["variant"]: r for r in rows(name) if r["backbone"] == backbone and r["runtime"] == "litert" and r["threads"] == 2}
    f, i, k = v["fp32"], v["int8"], v["int8-fast"]
    return (f"`{backbone}` {get_backbone(backbone).params / 1e6:.1f}M params, {f['macs'] / 1e9:.2f} GMAC, fp32 "
            f"{f['latency_ms_p50']:.1f} ms, int8 {i['latency_ms_p50']:.1f} ({i['partitions']} partitions), int8-fast "
            f"{k['latency_ms_p50']:.1f} ({k['partitions']}), {k['speedup_vs_fp32']:.2f}x, accuracy "
            f"{f['accuracy']:.3f} / {i['accuracy']:.3f} / {k['accuracy']:.3f}")


def p2_other_sizes(up: str) -> str:
    peak = load_json("p2_poolformer_s24.peak.json")["peak"]
    return (f"MobileViT ({link(up, 'p2_mobilevit.csv')}): {_p2_line('p2_mobilevit', 'mobilevit_xxs')}; "
            f"{_p2_line('p2_mobilevit', 'mobilevit_xs')}. PoolFormer-S24 ({link(up, 'p2_poolformer_s24.csv')}, a later "
            f"run: GEMM peaks {peak['fp32@2']:.0f} fp32 / {peak['int8@2']:.0f} int8 GMAC/s): "
            f"{_p2_line('p2_poolformer_s24', 'poolformer_s24')}")


def p2_peaks(up: str) -> str:
    p = [load_json(f"{n}.peak.json")["peak"] for n in PAPER2]
    return (f"XNNPACK's int8 GEMM peak measured {rng([x['int8@2'] for x in p], '{:.0f}', '')} GMAC/s against "
            f"{rng([x['fp32@2'] for x in p], '{:.0f}', '')} fp32")


def p2_findings(up: str) -> str:
    p = _paper2_rows()
    x = {b: {k: v[k]["speedup_vs_fp32"] for k in v} for b, v in p.items()}
    wins = [b for b in p if x[b]["int8"] > 1]
    falls = [b for b in p if b not in wins]
    parts = [p[b]["int8"]["partitions"] for b in falls]
    fast = [x[b]["int8-fast"] for b in falls]
    d = p["deit_tiny"]
    return (f"- Full int8 beats fp32 only for {', '.join(f'{b} ({x[b][INT8]:.2f}x)' for b in wins)}. Every other "
            f"architecture falls out of the delegate in full int8 ({min(parts)}-{max(parts)} partitions) and is slower "
            f"than fp32 ({', '.join(f'{b} {x[b][INT8]:.2f}x' for b in falls)}).\n"
            f"- `int8-fast` brings every one of them to {rng([p[b][FAST]['partitions'] for b in falls], '{}', '')} "
            f"partitions (the classifier's int8 SOFTMAX is the other one) and {rng(fast, '{:.2f}')} faster than fp32; "
            f"DeiT-tiny at 224 runs {d[FP32]['images_per_s']:.0f} images/s in fp32 and {d[FAST]['images_per_s']:.0f} in "
            f"`int8-fast` here (the study's 6 images/s was a phone).")


def p2_mobilevit_xxs_flips(up: str) -> str:
    """MobileViT-XXS at 64 px in p2_variants: check images int8 / int8-fast disagree on, and the 256 px change."""
    n = 12  # the check images of benchmarks/p2_variants.py (see the p2-variants caption)
    a = {r["variant"]: r["top1_agreement"] for r in rows("p2_variants")
         if r["backbone"] == "mobilevit_xxs" and r["sparsity"] == 0.0}
    if any(abs(n * a[k] - round(n * a[k])) > 1e-6 for k in ("int8", "int8-fast")):
        raise SystemExit(f"error: p2_variants.csv: agreements are not in twelfths; update n in {__file__}")
    v = {r["variant"]: r for r in rows("p2_mobilevit") if r["backbone"] == "mobilevit_xxs" and r["runtime"] == "litert"
         and r["threads"] == 2}
    return (f"full int8 flips {round(n * (1 - a['int8']))} of {n} check images (probe probabilities near 0.5 on random "
            f"features; at 256 px the benchmark's accuracy changed by "
            f"{100 * (v['int8']['accuracy'] - v['fp32']['accuracy']):+.0f} pp, {link(up, 'p2_mobilevit.csv')}), "
            f"`int8-fast` {round(n * (1 - a['int8-fast']))}")


def swin_partitions(up: str) -> str:
    v = {r["variant"]: r for r in rows("p2_224") if r["backbone"] == "swin_tiny" and r["runtime"] == "litert"
         and r["threads"] == 2}
    return (f"Swin-tiny int8: {v['int8']['partitions']} partitions; `int8-fast`: {v['int8-fast']['partitions']}; "
            f"{link(up, 'p2_224.csv')}")


P2_NEW = ("mobilevit", "poolformer", "swin", "beit")  # the four families gram_tf ported for the second paper


def p2_fp32_partitions(up: str) -> str:
    names = (*PAPER2, "p2_poolformer_s24")
    fp32 = [r for n in names for r in rows(n) if r["variant"] == "fp32" and r["runtime"] == "litert"
            and r["backbone"].startswith(P2_NEW)]
    split = sorted({f"{r['backbone']} {r['partitions']} ({r['fallback_ops']})" for r in fp32 if r["partitions"] != 1})
    files = ", ".join(link(up, f"{n}.csv") for n in names)
    if split:
        return f"the fp32 graph is one partition except {', '.join(split)} ({files})"
    return f"every new backbone's fp32 graph ({len({r['backbone'] for r in fp32})} of them, {files}) is one partition with no fallback"


def swin_mask(up: str) -> str:
    m = {int(r["mask"]): r for r in rows("swin_mask_int8")}
    a, b, c = m[-100], m[-30], m[-10]
    cos = rng([r["int8_cosine"] for r in (a, b, c)], "{:.4f}", "")
    cos += " all three" if "-" not in cos else ""
    sci = lambda x: f"{x:.0e}".replace("e-0", "e-")  # noqa: E731
    return (f"widens the calibrated range of the masked blocks' softmax inputs {a['widest_logit_range'] / c['widest_logit_range']:.0f}x "
            f"({a['widest_logit_range']:.0f} vs {c['widest_logit_range']:.0f} with a -10 mask; unmasked blocks "
            f"{a['median_logit_range']:.0f}), yet the full-int8 features' error is the same (relative L2 "
            f"{a['int8_rel_l2']:.4f} at -100, {b['int8_rel_l2']:.4f} at -30, {c['int8_rel_l2']:.4f} at -10; cosine "
            f"{cos}), and -10 is not the same softmax in float "
            f"(features move by {sci(c['float_max_abs_change_vs_first'])}; -30 by {sci(b['float_max_abs_change_vs_first'])}; "
            f"{link(up, 'swin_mask_int8.csv')})")


def mobilevit_xxs_guard(up: str) -> str:
    """conversion.md: why the guard also runs when the only accurate candidates are slower than fp32."""
    fast = load_json("p2_mobilevit.fast.json")["mobilevit_xxs"]
    ref, cands = fast["float_val_accuracy"], fast["candidates"]
    ok = [k for k, c in cands.items() if k != "accuracy-guarded" and ref - c["val_accuracy"] <= fast["max_drop"]]
    i8 = pick("p2_mobilevit", backbone="mobilevit_xxs", variant="int8", threads=2, runtime="litert")
    only = "the only candidate" if ok == ["full-int8"] else f"one of {len(ok)} candidates"
    return (f"MobileViT-XXS full int8 was {1 / i8['speedup_vs_fp32']:.1f}x slower than fp32 and {only} within "
            f"{100 * fast['max_drop']:.0f} pp ({link(up, 'p2_mobilevit.csv')}, {link(up, 'p2_mobilevit.fast.json')})")


def training_cache_table(up: str) -> str:
    labels = {"memory": "`memory` (default)", "none": "`none` (backbone every epoch)"}
    r = {row["cache"]: row for row in rows("training_cache")}
    body = [[labels.get(k, f"`{k}`"), f"{x['wall_s']:.1f} s",
             f"{x['feature_extraction_s']:.1f} s" if x["feature_extraction_s"] else "-",
             f"{x['head_training_s']:.1f} s", f"{x['test_accuracy']:.3f}"] for k, x in r.items()]
    epochs = {x["epochs"] for x in r.values()}.pop()
    mem, none = r["memory"], r["none"]
    headers = ["cache", "wall time", "backbone passes (feature extraction)", f"head training ({epochs} epochs)", "test accuracy"]
    return ("\n" + caption(up, ["training_cache"], "TensorFlow's default threads") + "\n\n" + md_table(headers, body)
            + f"\n\nCached features make the whole run {none['wall_s'] / mem['wall_s']:.1f}x faster and the epochs "
            f"themselves {none['head_training_s'] / mem['head_training_s']:.1f}x faster.\n")


# ---- docs/pruning.md -----------------------------------------------------------------------------------

PRUNE_LEVELS = (0.5, 0.7, 0.75, 0.8, 0.85, 0.9)


def pruning_accuracy(up: str) -> str:
    keras = [r for r in rows("pruning_real") if r["variant"] == "keras"]
    runs = list(dict.fromkeys((r["dataset"], r["backbone"]) for r in keras))
    body = []
    for data, b in runs:
        mine = [r for r in keras if (r["dataset"], r["backbone"]) == (data, b)]
        dense = next(r for r in mine if r["recipe"] == "dense")["test_accuracy"]
        for recipe in ("old", "new"):
            at = {r["sparsity_target"]: r for r in mine if r["recipe"] == recipe}
            picked = [f"{s:.0%}" for s, r in at.items() if r["chosen_by_max_drop"] is True or r["chosen_by_max_drop"] == "True"]
            body.append([data, b, recipe, f"{dense:.3f}",
                         *(f"{at[s]['test_accuracy']:.3f} ({at[s]['delta_pp_vs_fp32']:+.1f})" if s in at else "-" for s in PRUNE_LEVELS),
                         ", ".join(picked) or "-"])
    headers = ["data", "backbone", "recipe", "dense", *(f"{s:.0%}".replace("%", " %") for s in PRUNE_LEVELS),
               "`--max-drop-pp 1` picks (val)"]
    return ("\n" + caption(up, ["pruning_real"], "test accuracy of the Keras model") + "\n\n"
            + md_table(headers, body) + "\n")


def _zip_cells(rs: list[dict]) -> list[str]:
    """fp32 / int8 / int8-per-tensor (not search) / int8-per-tensor search: 'acc', 'zip (x smaller)' each."""
    def one(pred):
        r = next(r for r in rs if pred(r))
        return [f"{r['test_accuracy']:.3f}", f"{r['zip_bytes'] / 1e6:.3f} MB ({r['x_smaller_zip_vs_fp32']:.2f}x)"]

    pt = lambda r: r["variant"] == "int8-per-tensor"  # noqa: E731
    return [*one(lambda r: r["variant"] == "fp32"), *one(lambda r: r["variant"] == "int8"),
            *one(lambda r: pt(r) and not r["int8_recipe"].endswith("search")),
            *one(lambda r: pt(r) and r["int8_recipe"].endswith("search"))]


def pruning_size_table(name: str, up: str) -> str:
    rs = [r for r in rows(name) if r["recipe"] in ("dense", "new")]
    groups = list(dict.fromkeys((r["dataset"], r["backbone"], r["recipe"], r["sparsity_target"]) for r in rs))
    body = [[d, b, "dense" if rec == "dense" else f"new {s:.0%}",
             *_zip_cells([r for r in rs if (r["dataset"], r["backbone"], r["recipe"], r["sparsity_target"]) == (d, b, rec, s)])]
            for d, b, rec, s in groups]
    headers = ["data", "backbone", "model", "fp32 acc", "fp32 zip (x smaller)", "int8 acc", "int8 zip (x smaller)",
               "int8-per-tensor acc", "int8-per-tensor zip (x smaller)", "per-tensor, `search` acc", "zip (x smaller)"]
    return "\n" + caption(up, [name], "LiteRT, test split") + "\n\n" + md_table(headers, body) + "\n"


def pruning_check_table(up: str) -> str:
    """The re-check runs, one table per machine (caption() refuses a mix)."""
    return "".join(pruning_size_table(n, up) for n in ("pruning_real_check80", "pruning_real_check85"))


def _smallest() -> list[tuple[str, str, dict, dict]]:
    """Per pruning_real run: (data, backbone, the smallest artifact within 1 pp of the dense fp32 .tflite, that fp32 row)."""
    from gram_tf.metrics import within_drop

    out = []
    for d, b in dict.fromkeys((r["dataset"], r["backbone"]) for r in rows("pruning_real")):
        rs = [r for r in rows("pruning_real") if (r["dataset"], r["backbone"]) == (d, b) and r.get("zip_bytes") not in ("", None)]
        dense = next(r for r in rs if r["recipe"] == "dense" and r["variant"] == "fp32")
        ok = [r for r in rs if r["recipe"] in ("dense", "new") and within_drop(dense["test_accuracy"], r["test_accuracy"], 0.01)]
        out.append((d, b, min(ok, key=lambda r: r["zip_bytes"]), dense))
    return out


def pruning_smallest(up: str) -> str:
    """Per run: the smallest artifact within 1 pp of the dense fp32 .tflite (the script's last lines)."""
    out = []
    for d, b, r, dense in _smallest():
        recipe = " (search)" if r["int8_recipe"].endswith("search") else ""
        out.append(f"- {d} / {b}: {r['sparsity_target']:.0%} `{r['variant']}`{recipe}, test {r['test_accuracy']:.3f} vs "
                   f"{dense['test_accuracy']:.3f}, zip {r['zip_bytes'] / 1e3:.0f} KB = **{dense['zip_bytes'] / r['zip_bytes']:.1f}x** "
                   f"smaller than the dense fp32 `.tflite` ({mb(dense['zip_bytes'])})")
    return "\n" + "\n".join(out) + "\n"


def lvl(s: float) -> str:
    """0.85 -> '85 %'."""
    return f"{100 * s:.0f} %"


def _pruned(data: str, backbone: str) -> dict:
    """(recipe, level, variant[, calibration]) -> row of one pruning_real run (calibration: search / percentile)."""
    out = {}
    for r in rows("pruning_real"):
        if (r["dataset"], r["backbone"]) == (data, backbone):
            key = (r["recipe"], r["sparsity_target"], r["variant"])
            if r["variant"] == "int8-per-tensor":
                key += ("search" if r["int8_recipe"].endswith("search") else "percentile",)
            out[key] = r
    return out


def pruning_quickstart(up: str) -> str:
    k = {s: _qs("keras", s) for s in (0.0, 0.5)}
    return (f"50 % pruned {k[0.5]['accuracy']:.3f}, dense {k[0.0]['accuracy']:.3f} (Keras, {k[0.0]['n_test']} test images, "
            f"{link(up, 'quickstart.csv')})")


def _search_vs_percentile():
    """pruned int8-per-tensor of pruning_real: ({(run, level): pp search - percentile}, wins, losses,
    {calibration: seconds per conversion})."""
    diff, secs = {}, {"percentile": [], "search": []}
    for k in dict.fromkeys((r["dataset"], r["backbone"]) for r in rows("pruning_real")):
        R = _pruned(*k)
        for key, r in R.items():
            if key[0] == "new" and key[2] == "int8-per-tensor":
                secs[key[3]].append(r["seconds"])
                if key[3] == "search":
                    diff[(k, key[1])] = 100 * (r["test_accuracy"] - R[(*key[:3], "percentile")]["test_accuracy"])
    return (diff, [x for x, d in diff.items() if d > 0.01], [x for x, d in diff.items() if d < -0.01], secs)


def search_vs_percentile(up: str) -> str:
    diff, win, lose, secs = _search_vs_percentile()
    return (f"on the {len(diff)} pruned MobileNetV2s of {link(up, 'pruning_real.csv')} it beat percentile by "
            f"{rng([diff[x] for x in win], '{:.1f}', ' pp')} in {len(win)}, tied in {len(diff) - len(win) - len(lose)} and "
            f"lost in {len(lose)}")


def search_seconds(up: str) -> str:
    secs = _search_vs_percentile()[3]
    return (f"{rng(secs['search'], '{:.0f}', ' s')} per `search` conversion against "
            f"{rng(secs['percentile'], '{:.0f}', ' s')} for percentile, MobileNetV2 at 224 px on 2 cores, "
            f"{link(up, 'pruning_real.csv')}")


def pruning_findings(up: str) -> str:
    """The bullets under pruning.md's tables, from pruning_real.csv (and int8_recipes.csv for the old int8)."""
    runs = list(dict.fromkeys((r["dataset"], r["backbone"]) for r in rows("pruning_real")))
    R = {k: _pruned(*k) for k in runs}

    def acc(k, level, variant, *cal):
        return R[k][("dense" if level == 0 else "new", level, variant, *cal)]["test_accuracy"]

    def name(k):
        return f"{k[1]} ({k[0]})"

    dense = {k: R[k][("dense", 0.0, "keras")]["test_accuracy"] for k in runs}
    levels = sorted({key[1] for k in runs for key in R[k] if key[0] == "new"})
    top, mid = levels[-1], levels[:-1]
    span = f"{lvl(mid[0])} to {lvl(mid[-1])}"
    pp = lambda a, b: 100 * (a - b)  # noqa: E731
    at = lambda k, s: pp(acc(k, s, "keras"), dense[k])  # noqa: E731
    lines = []

    old80 = " / ".join(f"{R[k][('old', 0.8, 'keras')]['test_accuracy']:.3f}" for k in runs)
    new80 = " / ".join(f"{acc(k, 0.8, 'keras'):.3f}" for k in runs)
    lines.append(f"The collapse is gone at 80 %: {new80} where the old recipe gave {old80} ({', '.join(map(name, runs))}). "
                 f"The new recipe against dense from {span}: "
                 + "; ".join(f"{name(k)} {rng([at(k, s) for s in mid], '{:+.1f}', ' pp')} ({lvl(mid[0])}: {at(k, mid[0]):+.1f})"
                             for k in runs) + ".")

    def picked(k):
        return next(f"{lvl(key[1])}" for key, r in R[k].items()
                    if key[0] == "new" and key[2] == "keras" and r["chosen_by_max_drop"] in (True, "True"))

    lines.append(f"{lvl(top)} is too far for these two small networks on a few hundred images: "
                 f"{'; '.join(f'{name(k)} {at(k, top):+.1f} pp' for k in runs)}. `--max-drop-pp 1` (validation) picks "
                 f"{', '.join(f'{picked(k)} for {name(k)}' for k in runs)}, never {lvl(top)}.")

    small = {(d, b): dense["zip_bytes"] / r["zip_bytes"] for d, b, r, dense in _smallest()}
    hit = [k for k in runs if small[k] >= 15]
    lines.append("**The study's \"15x smaller without losing accuracy\"**, the smallest artifact within 1 pp of the dense "
                 "fp32 `.tflite` (the list above): " + "; ".join(f"{name(k)} {small[k]:.1f}x" for k in runs)
                 + f", {len(hit)} of {len(runs)} reach it.")

    real = [k for k in runs if k[0] == "real"]
    accs = sorted({r["test_accuracy"] for k in real for r in R[k].values()})
    image_pp = 100 / round(1 / min(b - a for a, b in zip(accs, accs[1:])))  # one image of the real test split
    lines.append("Per-channel `int8` of the pruned models against their own fp32 `.tflite` from "
                 f"{span}: " + "; ".join(f"{name(k)} {rng([pp(acc(k, s, 'int8'), acc(k, s, 'fp32')) for s in mid], '{:+.1f}', ' pp')}"
                                         for k in runs)
                 + f"; at {lvl(top)}: " + ", ".join(f"{acc(k, top, 'fp32'):.3f} -> {acc(k, top, 'int8'):.3f}" for k in runs)
                 + f" ({', '.join(map(name, runs))}). One test image of the real set is {image_pp:.2f} pp.")

    old = pick("int8_recipes", backbone="mobilenet_v2_050", sparsity_target=0.8, variant="int8", recipe="minmax")
    lines.append(f"Before issue 16's recipe became the default for pruned models, the converter's own int8 of "
                 f"MobileNetV2-0.5 at 80 % gave {old['test_accuracy']:.3f} ({old['delta_pp_vs_fp32']:+.1f} pp; "
                 f"{link(up, 'int8_recipes.csv')}).")

    size = [100 * (1 - R[k][("dense" if s == 0 else "new", s, "int8-per-tensor", "percentile")]["zip_bytes"]
                   / R[k][("dense" if s == 0 else "new", s, "int8")]["zip_bytes"]) for k in runs for s in [0.0, *levels]]
    vs_pc = {(k, s): pp(acc(k, s, "int8-per-tensor", "percentile"), acc(k, s, "int8")) for k in runs for s in mid}
    worse = [(k, s) for (k, s), d in vs_pc.items() if d < -1.5]
    lines.append(f"**`int8-per-tensor` is the size lever of a pruned model**, and the default for "
                 f"`convert.pruned_variants` (`fp32`, `int8`, `int8-per-tensor`). Per-channel int8 stores a float scale "
                 f"and an int64 zero point per output channel for every kernel and every bias; they do not compress. "
                 f"One scale per tensor saves them: its zip is {rng(size, '{:.0f}', ' %')} smaller than per-channel's at "
                 f"every level. Its accuracy (percentile calibration) against per-channel from {span}: "
                 f"{rng(vs_pc.values(), '{:+.1f}', ' pp')}"
                 + (f", below -1.5 pp for {', '.join(f'{name(k)} at {lvl(s)} ({vs_pc[(k, s)]:+.1f})' for k, s in worse)}"
                    if worse else "") + ".")

    diff, win, lose, secs = _search_vs_percentile()

    def where(ks):
        return "; ".join(f"{name(k)} at {', '.join(f'{lvl(s)}' for kk, s in ks if kk == k)}"
                         for k in dict.fromkeys(k for k, _ in ks))

    def lost(k, s):
        return (f"{name(k)} at {lvl(s)}: {acc(k, s, 'int8-per-tensor', 'search'):.3f} against "
                f"{acc(k, s, 'int8-per-tensor', 'percentile'):.3f}")

    d0 = runs[0]
    lines.append(f"No fixed calibration wins everywhere, hence `search`, which picks on validation: over the {len(diff)} "
                 f"pruned per-tensor artifacts above it beats percentile by {rng([diff[x] for x in win], '{:.1f}', ' pp')} "
                 f"in {len(win)} ({where(win)}), ties in {len(diff) - len(win) - len(lose)} and loses in {len(lose)}"
                 + (f" ({'; '.join(lost(k, s) for k, s in lose)})" if lose else "")
                 + f"; on the dense {d0[1]} ({d0[0]}) it gives {acc(d0, 0.0, 'int8-per-tensor', 'search'):.3f} against "
                 f"percentile's {acc(d0, 0.0, 'int8-per-tensor', 'percentile'):.3f}, so a dense run's `auto` stays "
                 f"percentile. Per-tensor conversions took {rng(secs['search'], '{:.0f}', ' s')} each with `search`, "
                 f"{rng(secs['percentile'], '{:.0f}', ' s')} with percentile (224 px, 2 cores).")

    cost = {}
    for k in runs:
        for key, r in R[k].items():
            if key[2] == "keras" and key[0] != "dense" and k[0] == "real":
                cost.setdefault((key[0], k[1]), []).append(r["seconds"])
    lines.append("Cost per level on 2 cores (224 px, real set: refit, 8 fine-tune epochs, a validation pass per "
                 "epoch): " + "; ".join(f"{rec} recipe {b} {rng(v, '{:.0f}', ' s')}" for (rec, b), v in sorted(cost.items()))
                 + ". The sweep re-prunes every level when the level list changes (deterministic: the same accuracies "
                 "come back).")
    return "\n" + "\n".join(f"- {line}" for line in lines) + "\n"


# ---- docs/quantization.md, docs/int8-accuracy.md -------------------------------------------------

def _default_tag(per_channel: bool, pruned: bool) -> str:
    from gram_tf.config import ConvertConfig
    from gram_tf.convert.recipe import resolve_recipe

    return resolve_recipe(ConvertConfig(), per_channel, pruned).tag()


def int8_recipes_table(variant: str, sparsity: float, up: str) -> str:
    """One int8_recipes table: recipe rows, backbone columns; cells test accuracy (pp vs fp32) / agreement."""
    rs = [r for r in rows("int8_recipes") if r["variant"] == variant and r["sparsity_target"] == sparsity]
    nets = list(dict.fromkeys(r["backbone"] for r in rs))
    by = {(r["recipe"], r["backbone"]): r for r in rs}
    default = _default_tag(variant == "int8", sparsity > 0)
    body = [["fp32 `.tflite`", *(f"{by[next(k for k in by if k[1] == b)]['fp32_accuracy']:.3f}" for b in nets)]]
    for recipe in dict.fromkeys(r["recipe"] for r in rs):
        label = f"**{recipe}** (default)" if recipe == default else recipe
        body.append([label, *(f"{by[(recipe, b)]['test_accuracy']:.3f} ({by[(recipe, b)]['delta_pp_vs_fp32']:+.1f}) / "
                              f"{by[(recipe, b)]['agreement_vs_keras']:.3f}" for b in nets)])
    return ("\n" + caption(up, ["int8_recipes"], "accuracy only (no timing)") + "\n\n"
            + md_table(["recipe", *nets], body) + "\n")


def recipes_prepare_seconds(up: str) -> str:
    secs = [r["prepare_seconds"] for r in rows("int8_recipes") if "cle" in r["recipe"] and "bc" in r["recipe"]
            and "float" not in r["recipe"] and isinstance(r.get("prepare_seconds"), float)]
    return rng(secs, "{:.0f}", " s")


def _acc(name: str) -> dict[tuple[str, str], dict]:
    return {(r["backbone"], r["variant"]): r for r in rows(name)}


def _aa(r: dict | None) -> str:
    return f"{r['accuracy']:.3f} / {r['agreement']:.3f}" if r else "-"


# (column header, variant name in the int8_accuracy rows); the DeiT / B3 run spells percentile with its value
HARNESS_RECIPES = (("Keras", "keras fp32"), ("int8 (minmax)", "int8"), ("percentile 99.99", "int8 + percentile"),
                   ("percentile 99.9", "int8 + percentile:99.9"), ("mse", "int8 + mse"), ("entropy", "int8 + entropy"),
                   ("bc", "int8 + bc"), ("cle+bc", "int8 + cle+bc"), ("bc+percentile", "int8 + bc+percentile"))


def harness_recipes_table(up: str) -> str:
    body = []
    for name in ("int8_accuracy_recipes", "int8_accuracy_recipes2"):
        a = _acc(name)
        for b in dict.fromkeys(r["backbone"] for r in rows(name)):
            def get(v):
                return a.get((b, v)) or a.get((b, v.replace("percentile", "percentile:99.99")))
            body.append([b, *(_aa(get(v)) for _, v in HARNESS_RECIPES)])
    return ("\n" + caption(up, ["int8_accuracy_recipes", "int8_accuracy_recipes2"], "accuracy / agreement with Keras, "
                           "96 test images") + "\n\n" + md_table(["backbone", *(h for h, _ in HARNESS_RECIPES)], body) + "\n")


def harness_percentiles(up: str) -> str:
    a, pcts = _acc("int8_accuracy_recipes3"), ("99.999", "99.995", "99.98")
    return (f"{link(up, 'int8_accuracy_recipes3.csv')}; agreement at {' / '.join(pcts)}: " + ", ".join(
        f"{b} " + " / ".join(f"{a[(b, f'int8 + percentile:{p}')]['agreement']:.3f}" for p in pcts)
        for b in dict.fromkeys(r["backbone"] for r in rows("int8_accuracy_recipes3"))))


def meanmax_table(up: str) -> str:
    a, counts, methods = _acc("int8_accuracy_meanmax"), ("", " (cal100)", " (cal128)"), ("minmax", "percentile:99.99", "mse", "meanmax")
    body = []
    for b in dict.fromkeys(r["backbone"] for r in rows("int8_accuracy_meanmax")):
        for i, m in enumerate(methods):
            first = f"{b} ({a[(b, 'keras fp32')]['accuracy']:.3f})" if i == 0 else ""
            body.append([first, m.replace(":", " "), *(_aa(a[(b, f"int8 + {m}{c}")]) for c in counts)])
    headers = ["backbone (Keras)", "calibration", "32 (the sweep's)", "100 (`gram-tf convert`'s default)", "128"]
    return ("\n" + caption(up, ["int8_accuracy_meanmax"], "accuracy / agreement with Keras, 96 test images") + "\n\n"
            + md_table(headers, body) + "\n")


HARNESS_VS_CLI = {  # (setting, test set) of int8_harness_vs_cli -> the row's label
    ("harness", "bench96"): "harness", ("harness n_test=16", "bench96"): "harness, scored on 16 images",
    ("harness cal100", "bench96"): "+ 100 calibration images", ("harness io-int8", "bench96"): "+ int8 IO",
    ("harness probe+dropout", "bench96"): "+ dropout 0.2 in the probe",
    ("harness probe+aug-views", "bench96"): "+ probe fitted on augmented views",
    ("harness cli-head", "bench96"): "+ head trained as `gram-tf train` does",
    ("cli-pipeline (harness data)", "bench96"): "`gram-tf train` + `convert` on the harness's images",
    ("harness synth-data", "bench96"): "harness recipe on `gram-tf data synth` images",
    ("cli-default", "bench96"): "**CLI defaults** (`data synth` → `train` → `convert`), 96 test images",
    ("cli-default", "check16"): "CLI defaults, the conversion check's 16 images",
}


def harness_vs_cli_table(up: str) -> str:
    rs = rows("int8_harness_vs_cli")
    body = []
    for (setting, test), label in HARNESS_VS_CLI.items():
        m = next(r for r in rs if (r["setting"], r["test_set"], str(r["data_seed"])) == (setting, test, "mean"))
        norms = [r["head_weight_norm"] for r in rs if (r["setting"], r["test_set"]) == (setting, test) and r["data_seed"] != "mean"]
        body.append([label, f"{m['int8_agreement']:.3f} ({m['int8_agreement_min']:.2f}-{m['int8_agreement_max']:.2f})",
                     f"{m['int8_mean_abs_dp']:.3f}", f"{m['keras_median_margin']:.2f}", rng(norms, "{:.1f}", "")])
    headers = ["setting", "int8 agreement (range over draws)", "mean abs. dp", "Keras median margin", "head weight norm"]
    return ("\n" + caption(up, ["int8_harness_vs_cli"], f"EfficientNet-B0, means over {rs[-1]['draws']} draws") + "\n\n"
            + md_table(headers, body) + "\n")


INT8_ACCURACY_COLUMNS = ("weights-int8 (sim)", "dynamic", "int16x8", "int8", "int8-cal128", "int8-se-float")


def int8_accuracy_table(up: str) -> str:
    a = rows("int8_accuracy")
    body = []
    for b in dict.fromkeys(r["backbone"] for r in a):
        mine = {re.sub(r" \(\d+ float\)$", "", r["variant"]): r for r in a if r["backbone"] == b}
        k = mine["keras fp32"]
        body.append([b, f"{k['accuracy']:.2f}", f"{k['keras_median_margin']:.2f}",
                     *(f"{r['agreement']:.2f} / {r['accuracy']:.2f} / {r['mean_abs_dp']:.2f}" if (r := mine.get(c)) else "-"
                       for c in INT8_ACCURACY_COLUMNS)])
    headers = ["backbone", "Keras acc", "Keras median margin", *INT8_ACCURACY_COLUMNS[:-1], "int8, SE float"]
    return ("\n" + caption(up, ["int8_accuracy"], "agreement / accuracy / mean |Δp|, 96 test images") + "\n\n"
            + md_table(headers, body) + "\n")


ACTIVATIONS = {"efficientnet_lite": "ReLU6", "efficientnet": "swish + SE", "mobilenet_v2": "ReLU6",
               "mobilenet_v3": "hard-swish + SE", "resnet": "ReLU", "deit": "GELU, LayerNorm (layer outputs only)"}


def int8_ranges_table(up: str) -> str:
    body = []
    for r in rows("int8_ranges.ranges"):
        act = next(v for k, v in ACTIVATIONS.items() if r["backbone"].startswith(k))
        body.append([r["backbone"], act, r["tensors"], f"{r['median_calib_over_image_range']:.2f}x",
                     f"{r['median_int8_steps_per_std']:.1f}", r["tensors_under_4_steps"], r["tensors_under_1_step"],
                     r["worst_tensors"]])
    headers = ["backbone", "activations", "tensors", "calibrated / one image range (median)",
               "int8 steps per std (median)", "tensors < 4 steps", "tensors < 1 step", "fewest steps"]
    return ("\n" + caption(up, ["int8_ranges"], "LiteRT converter's calibration, 32 images") + "\n\n"
            + md_table(headers, body) + "\n")

# ---- docs/phones.md, docs/deploy.md, docs/benchmark-and-report.md --------------------------------

PIXEL_MODELS = {"quickstart": "quickstart (random weights, synthetic, {size} px, {n} test images)",
                "mobilenet_v2_035_real": "MobileNetV2-0.35, ImageNet weights, real micrographs, {size} px, {n} test images"}


def pixel_input_table(up: str) -> str:
    rs = rows("pixel_input")
    by = {(r["model"], r["variant"], r["threads"], r["input"]): r for r in rs}
    body = []
    for m, v, t in dict.fromkeys((r["model"], r["variant"], r["threads"]) for r in rs):
        a, b = by[(m, v, t, "normalized")], by[(m, v, t, "pixels")]
        label = PIXEL_MODELS.get(m, m).format(size=a["input_size"], n=a["test_images"])
        acc = f"{a['test_accuracy']:.3f} -> {b['test_accuracy']:.3f}" if a["test_accuracy"] != "" else "-"
        body.append([label, v, t, acc,
                     f"{a['latency_ms_p50']:.3f} -> {b['latency_ms_p50']:.3f} ({b['latency_vs_normalized']:.2f}x)",
                     f"{a['predict_ms_per_image']:.3f} -> {b['predict_ms_per_image']:.3f} ({b['predict_vs_normalized']:.2f}x)"])
    headers = ["model", "variant", "threads", "test accuracy (normalized -> pixels)", "invoke ms", "`predict` ms / image"]
    return ("\n" + caption(up, ["pixel_input"], "LiteRT 2.3, interleaved rounds of 30 invokes; `predict` = "
                           "`Classifier.predict_arrays` on 16 decoded images, per image") + "\n\n"
            + md_table(headers, body) + "\n")


def pixel_input_costs(up: str) -> str:
    """What pixel input costs, per kind of variant, from pixel_input.csv's pixels rows."""
    rs = rows("pixel_input")
    px = [r for r in rs if r["input"] == "pixels"]
    norm = {(r["model"], r["variant"], r["threads"]): r for r in rs if r["input"] == "normalized"}
    integer = lambda r: r["io_type"] != "float32"  # noqa: E731
    pct = lambda xs: rng([100 * (x - 1) for x in xs], "{:.0f}", " %")  # noqa: E731
    inv = lambda t: [r["latency_vs_normalized"] for r in px if integer(r) and r["threads"] == t]  # noqa: E731
    real = [r for r in px if r["model"] == "mobilenet_v2_035_real" and r["threads"] == 1]
    scored = [r for r in px if r["threads"] == 1]
    moved = [r for r in scored if r["test_accuracy"] != norm[(r["model"], r["variant"], 1)]["test_accuracy"]]
    same = "the rest are equal" if moved else "all are equal"
    moves = "; ".join(f"on the {r['model']} model {r['variant']} gets {r['accuracy_delta_pp']:+.2f} pp "
                      f"({round(r['accuracy_delta_pp'] * r['test_images'] / 100):+d} of {r['test_images']} images right)"
                      for r in moved)
    pred = [r["predict_vs_normalized"] for r in px if integer(r) and r["threads"] == 1]
    real_acc = ", ".join(f"{r['variant']} {r['test_accuracy']:.3f}" for r in real)
    return (f"\n- **Accuracy: nothing.** Every real-weights artifact classifies the {real[0]['test_images']} real test "
            f"images exactly as before ({real_acc})"
            f"{'; ' + moves + ' (calibration sees a slightly different input tensor)' if moves else ''}, {same}. "
            f"Agreement with Keras is unchanged.\n"
            f"- **Float models: nothing** (invoke {rng([r['latency_vs_normalized'] for r in px if not integer(r)])}): "
            f"the subtract and multiply by scalars are two cheap XNNPACK passes.\n"
            f"- **Integer models: the invoke is {pct(inv(1))} slower at 1 thread, {pct(inv(2))} at 2.** The graph gains "
            f"the uint8-to-int8 QUANTIZE (a builtin kernel: XNNPACK does not take it, and it runs single-threaded) and "
            f"an int8 subtract and multiply. A per-channel mean/std or BGR backbone gets one 1x1 convolution instead "
            f"(the first form tried, a subtract and multiply by 3-vectors, was slower: XNNPACK broadcasts a last axis "
            f"of 3 slowly).\n"
            f"- **`gram-tf predict`: {rng([100 * (1 - x) for x in pred], '{:.0f}', ' %')} less time per image at 1 "
            f"thread for integer models** ({rng(pred)} of the normalized model's), the same for float "
            f"({rng([r['predict_vs_normalized'] for r in px if not integer(r) and r['threads'] == 1])}): the caller no "
            f"longer normalizes and quantizes each image (a table lookup per pixel); a uint8 pixel model takes the "
            f"decoded bytes as they are. At 2 threads the per-image figures "
            f"({rng([r['predict_vs_normalized'] for r in px if r['threads'] == 2])}) move between two runs of the same "
            f"command on this 2-core VM (they share the cores with the interpreter's threads), so they show no "
            f"direction.\n")


def pixel_input_invoke(up: str) -> str:
    x = [r["latency_vs_normalized"] for r in rows("pixel_input") if r["input"] == "pixels" and r["io_type"] != "float32"]
    return rng([100 * (v - 1) for v in x], "{:.0f}", " %")


PREDICT_WAYS = (  # (label, fp32 key, int8 key) in predict.json's throughput
    ("decode + resize only, 2 threads (bound 1)", "decode-only (2 threads)", "decode-only (2 threads)"),
    ("decode + resize only, 1 thread", "decode-only (1 thread)", "decode-only (1 thread)"),
    ("inference only, batch-1 model (bound 2)", "inference-only fp32 b1", "inference-only int8 b1"),
    ("inference only, batch-8 model", "inference-only fp32 b8", "inference-only int8 b8"),
    ("**end to end** (`predict --out`), batch-1 model", "end-to-end fp32 b1", "end-to-end int8 b1"),
    ("end to end, batch-8 model", "end-to-end fp32 b8", "end-to-end int8 b8"),
    ("end to end, one decode thread (the old serial path)", "end-to-end fp32 b1, serial decode (before)",
     "end-to-end int8 b1, serial decode (before)"),
)


def predict_table(up: str) -> str:
    tp = load_json("predict.json")["throughput"]
    body = [[label, f"{tp[f]['images_per_s']:.0f}", f"{tp[i]['images_per_s']:.0f}"] for label, f, i in PREDICT_WAYS]
    opts = load_json("predict.env.json")["options"]
    return ("\n" + caption(up, ["predict"], f"LiteRT 2.3, {opts['threads']} LiteRT threads, {opts['workers']} decode "
                           f"threads, medians of {opts['rounds']} interleaved rounds") + "\n\n"
            + md_table(["way", "fp32 img/s", "int8 img/s"], body) + "\n")


def predict_bounds(up: str) -> str:
    d = load_json("predict.json")
    tp = {k: v["images_per_s"] for k, v in d["throughput"].items()}
    dec, inf, e2e = tp["decode-only (2 threads)"], tp["inference-only fp32 b1"], tp["end-to-end fp32 b1"]
    cores = d["threads"]
    dec_ms, inf_ms = 1000 * cores / dec, 1000 * cores / inf
    return (f"End to end is {e2e / tp['end-to-end fp32 b1, serial decode (before)']:.1f}x the serial path, but "
            f"{d['fp32_end_to_end_over_bound']:.2f} of min(bound 1, bound 2), short of the 0.8 the issue asked for: "
            f"decoding and inference need the same {cores} cores. Decoding costs {cores}/{dec:.0f} = {dec_ms:.1f} ms of "
            f"core time per image and inference {cores}/{inf:.0f} = {inf_ms:.1f} ms (fp32), so {cores} cores cannot do "
            f"better than 1/({dec_ms:.1f} + {inf_ms:.1f} ms) x {cores} = {1000 * cores / (dec_ms + inf_ms):.0f} img/s; "
            f"{e2e:.0f} is at that ceiling (XNNPACK's threads are not fully busy). A batch-8 model "
            f"(`convert.batch_size: 8`) runs inference {100 * (tp['inference-only fp32 b8'] / inf - 1):.0f} % faster "
            f"here, which a decode-bound folder does not see")


def predict_memory(up: str) -> str:
    m = load_json("predict.json")["memory"]
    return ", ".join(f"{r['peak_rss_mb']:.0f} MB for {r['images']:,} images".replace(",", " ") for r in m)


def predict_draft(up: str) -> str:
    d = load_json("predict.json")["draft_agreement"]
    ms, real = d["real_decode_ms_per_image"], d["real_gramstainr"]
    same = "same top-1 on all" if min(real[v]["top1_agreement"] for v in ("fp32", "int8")) == 1 else "top-1 changed on some of the"
    return (f"{ms['exact'] / ms['draft']:.1f}x less decoding for {ms['size'].split()[0]} photos "
            f"({ms['exact']:.0f} -> {ms['draft']:.0f} ms), {same} {real['images']} real GramStainR photos "
            f"(fp32 and int8, {link(up, 'predict.json')})")


def predict_resume(up: str) -> str:
    k = load_json("predict.json")["kill_and_resume"]
    if not (k["killed"] and k["exactly_one_row_per_image"]):
        raise SystemExit("error: predict.json: the kill-and-resume check did not give one row per image; fix and rerun "
                         "benchmarks/bench_predict.py")
    return f"checked at {k['images']:,} images by the benchmark".replace(",", " ")


def _official(name: str, groups: dict[str, str], up: str) -> str:
    """official / ours (mean latency) per group of files and thread count, from NAME's official rows."""
    data = load_json(f"{name}.json" if name.endswith("_224") else f"{name}.official.json")
    body = []
    for t in sorted({r["threads"] for r in data}):
        for label, part in groups.items():
            rs = [r for r in data if r["threads"] == t and part in r["file"]]
            ms = rng([r["ours_ms_mean"] for r in rs], "{:.2f}", " ms")
            body.append([label.format(n=len(rs), ms=ms), t, rng([r["official_over_ours"] for r in rs], "{:.2f}", "")])
    return (caption(up, [name], "LiteRT 2.3, three interleaved rounds") + "\n\n"
            + md_table(["artifacts", "threads", "official / ours (mean latency)"], body) + "\n")


def official_tables(up: str) -> str:
    """Two runs, two machines as recorded (one without ISA flags): one table each."""
    return ("\n" + _official("official_check_224", {"MobileNetV2-0.35 224 px, fp32 and int8 ({ms})": ""}, up) + "\n"
            + _official("official_check", {"the quickstart's {n} artifacts (96 px, {ms})": ""}, up))

# ---- docs/generalization.md ----------------------------------------------------------------------------

def synth_styles(up: str) -> str:
    """The shifted styles of `gram-tf data synth --style`, from their table (gram_tf.data.synth.STYLES)."""
    from gram_tf.data.synth import STYLES

    return "\n" + md_table(["style", "the shift a lab sees"], [[f"`{s.name}`", s.shift] for s in STYLES]) + "\n"


def _ci(row: dict, col: str) -> str:
    return f"{row[col]:+.1f} [{row[col.replace('_pp', '') + '_low']:+.1f}, {row[col.replace('_pp', '') + '_high']:+.1f}]"


def generalization_real(up: str) -> str:
    """Per model and external set: in-domain and external drop vs dense fp32 (pp, 95 % CIs), their difference,
    agreement with fp32 (benchmarks/generalization_real.py)."""
    body = []
    for r in rows("generalization_real"):
        label = "Keras (TF)" if r["runtime"] == "keras" else r["variant"]
        body.append([f"`{r['set']}`", f"{r['sparsity_target']:g}", label,
                     f"{r['accuracy_in']:.3f} ({r['fp32_accuracy_in']:.3f})", _ci(r, "drop_in_pp"),
                     f"{r['accuracy_ext']:.3f} ({r['fp32_accuracy_ext']:.3f})", _ci(r, "drop_ext_pp"),
                     _ci(r, "excess_pp"), f"{100 * r['agreement_vs_fp32']:.1f} %",
                     "**worse off-domain**" if str(r["flagged"]) == "True" else ""])
    env = environment("generalization_real")
    headers = ["external set", "sparsity", "variant", "test acc (fp32)", "in-domain drop pp [95% CI]",
               "external acc (fp32)", "external drop pp [95% CI]", "external − in-domain pp [95% CI]",
               "agreement with fp32", "flag"]
    return ("\n" + caption(up, ["generalization_real"], f"accuracy only, study wall time {minsec(env['wall_s'])}")
            + "\n\n" + md_table(headers, body) + "\n")


def cluster_table(up: str) -> str:
    """benchmarks/ray_cluster.py: the same study on `local` and on Ray nodes of this machine, and the DAG's bounds."""
    env = load_json("ray_cluster.json")["environment"]
    walls, stages = {}, {}
    for r in rows("ray_cluster"):
        if r["kind"] == "study":
            walls[r["executor"]] = r["seconds"]
        else:
            stages.setdefault(r["stage"], {})[r["executor"]] = r
    nodes = {s["ray"]["node"] for s in stages.values() if "ray" in s}
    body = [["**whole study (wall time)**", f"**{minsec(walls['local'])}**", f"**{minsec(walls['ray'])}**", ""]]
    body += [[f"`{name}`", f"{s['local']['seconds']:.1f} s", f"{s['ray']['seconds']:.1f} s",
              f"node {sorted(nodes).index(s['ray']['node']) + 1}"] for name, s in stages.items()]
    headers = ["stage", "local (one process)", f"ray ({env['nodes']} nodes x 1 CPU)", "ray node"]
    return ("\n" + caption(up, ["ray_cluster"], "stage times as each stage's record has them") + "\n\n"
            + md_table(headers, body)
            + f"\n\nTotal work (the local run's stage times added up): {env['total_work_s']:.0f} s. Critical path "
            f"(the longest chain of the DAG, same times): {env['critical_path_s']:.0f} s, "
            f"{env['critical_path'].replace(' -> ', ' → ')}. No number of nodes can make this study more than "
            f"{env['max_speedup']:.2f}x faster than the sum of its stages. On the Ray run's own stage times: work "
            f"{env['ray_total_work_s']:.0f} s, critical path {env['ray_critical_path_s']:.0f} s, wall time "
            f"{walls['ray']:.0f} s.\n")


# ---- benchmarks/results/README.md --------------------------------------------------------------------

RUN_SUFFIXES = (".env.json", ".peak.json", ".fast.json", ".targets.json", ".ranges.csv", ".ranges.json",
                ".official.json", ".csv", ".json")


def run_names() -> list[str]:
    """Every run in benchmarks/results: the file names without the suffixes of one run's files."""
    names = set()
    for path in RESULTS.iterdir():
        for suffix in RUN_SUFFIXES:
            if path.name.endswith(suffix):
                names.add(path.name[: -len(suffix)])
                break
    return sorted(names)


def results_machines(up: str) -> str:
    body = []
    for n in run_names():
        env = environment(n)
        sources = [f for f in (f"{n}.json", f"{n}.env.json", f"{n}.peak.json", f"{n}.csv") if (RESULTS / f).is_file()]
        body.append([f"`{n}`", machine(n) if env.get("cpu") else "not recorded", env.get("date") or "not recorded",
                     ", ".join(f"`{f}`" for f in sources)])
    return "\n" + md_table(["run", "machine (CPU, ISA flags)", "date", "read from"], body) + "\n"


# ---- the table of blocks -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    file: str
    name: str
    sources: tuple[str, ...]  # results files read (for the reader; the function reads them itself)
    render: Callable[[str], str]  # (relative path up to the repository root) -> the block's text


# ---- trusted benchmarks (docs/benchmark-and-report.md) ---------------------------------------------

def bench_trust_table(up: str) -> str:
    """How far bench's speed-ups are from an independent interleaved timing, before and after rounds."""
    env = environment("bench_trust")
    body = []
    for r in rows("bench_trust.summary"):
        short = lambda f: "-" if f in (None, "") else str(f).replace("mobilenet_v2_035__", "").replace(".tflite", "")
        body.append([r["set"], r["condition"], r["method"], r.get("repeats") or 1, f"{r['mean_abs_error_pct']:.1f}",
                     f"{r['max_abs_error_pct']:.1f}", "-" if r["inversions"] in (None, "") else r["inversions"],
                     r["truth_in_ci"] or "-", "-" if r["noise_pct"] in (None, "") else f"{r['noise_pct']:.0f}",
                     "-" if r.get("busy_cores") in (None, "") else f"{r['busy_cores']:.2f}",
                     r["noise_warning"] or "-", " \\| ".join(short(x) for x in str(r["auto"] or "").split(" | ")) or "-",
                     " \\| ".join(short(x) for x in str(r["truth_auto"] or "").split(" | ")) or "-",
                     "-" if r["wall_s"] in (None, "") else f"{r['wall_s']:.0f}"])
    headers = ["set", "condition", "method", "runs", "mean \\|error\\| %", "max \\|error\\| %", "order flips",
               "truth in CI", "noise %", "others' cores", "unreliable (runs)", "auto choice (1 pp)", "truth's fastest (within 5 %)",
               "bench s"]
    note = (f"{env.get('before', '')}; {env.get('burners', 1)} busy-looping process(es) beside the burner runs; "
            f"a fresh worker process per visit would cost {env.get('fresh_worker_s')} s and "
            f"{env.get('fresh_worker_rss_mb')} MB")
    threads = f"{rows('bench_trust')[0]['threads']} threads"
    return "\n" + caption(up, ["bench_trust"], threads) + f" *Before: {note}.*\n\n" + md_table(headers, body) + "\n"


BLOCKS = [
    Block("README.md", "quickstart-wall", ("quickstart.json",), quickstart_wall),
    Block("README.md", "quickstart", ("quickstart.csv", "quickstart.json"), quickstart_table),
    Block("README.md", "quickstart-smaller", ("quickstart.csv",), quickstart_smaller),
    Block("README.md", "headline-amd-epyc", ("int8.csv", "int8.peak.json"), headline_amd),
    Block("README.md", "headline-quickstart", ("quickstart.csv",), quickstart_pruning),
    Block("README.md", "headline-real-weights", ("int8_recipes.csv",), headline_recipes),
    Block("README.md", "headline-intel-xeon", tuple(f"{n}.csv" for n in PAPER2), headline_intel),
    Block("README.md", "backbone-count", tuple(f"{n}.csv" for n in SWEEP), registry_count),
    Block("README.md", "quickstart-ci", ("quickstart.csv",), quickstart_ci),
    Block("README.md", "ci-time", ("ci.json",), ci_time),
    Block("README.md", "drift", ("int8.csv",), drift),
    Block("docs/development.md", "ci-time", ("ci.json",), ci_time),
    Block("benchmarks/results/README.md", "machines", ("*.json", "*.env.json", "*.peak.json", "*.csv"), results_machines),
    Block("docs/transformers.md", "paper2", tuple(f"{n}.csv" for n in PAPER2), paper2_table),
    Block("docs/training.md", "training-cache", ("training_cache.json",), training_cache_table),
    Block("docs/cluster.md", "ray-cluster", ("ray_cluster.csv", "ray_cluster.json"), cluster_table),
    Block("docs/study.md", "quickstart-wall", ("quickstart.json",), quickstart_wall),
    Block("docs/study.md", "quickstart", ("quickstart.csv", "quickstart.json"), quickstart_table),
    Block("docs/study.md", "quickstart-smaller", ("quickstart.csv",), quickstart_smaller),
    Block("docs/study.md", "quickstart-ci", ("quickstart.csv",), quickstart_ci),
    Block("docs/README.md", "backbone-count", SWEEP_FILES, registry_count),
    Block("docs/conversion.md", "mobilevit-xxs-guard", ("p2_mobilevit.csv", "p2_mobilevit.fast.json"), mobilevit_xxs_guard),
    Block("docs/performance-x86.md", "int8", ("int8.csv",), int8_table),
    Block("docs/performance-x86.md", "sweep", tuple(f"{n}.csv" for n in SWEEP), sweep_table),
    Block("docs/performance-x86.md", "sweep-speed", tuple(f"{n}.csv" for n in SWEEP), sweep_speed),
    Block("docs/performance-x86.md", "backbone-count", tuple(f"{n}.csv" for n in SWEEP), registry_count),
    Block("docs/performance-x86.md", "int8-fallbacks", ("int8.fast.json",), int8_fallbacks),
    Block("docs/performance-x86.md", "gemm-peak", ("peak_runtimes.json",), gemm_peak_table),
    Block("docs/performance-x86.md", "int8-peak", ("int8.peak.json",), int8_peak_line),
    Block("docs/performance-x86.md", "peak-runs", ("peak_runtimes.json", "*.peak.json"), peak_runs),
    Block("docs/performance-x86.md", "drift", ("int8.csv",), drift),
    Block("docs/performance-x86.md", "int8-resnet-peak", ("int8.csv", "int8.peak.json"), int8_resnet_peak),
    Block("docs/performance-x86.md", "sweep-slow", (*SWEEP_FILES, "int8_all.fast.json", "int8_rest.fast.json"), sweep_slow),
    Block("docs/performance-x86.md", "deit-base-rounds", ("deit_base_rounds.csv", *SWEEP_FILES), deit_base_rounds),
    Block("docs/performance-x86.md", "convnext-sweep", SWEEP_FILES, convnext_sweep),
    Block("docs/performance-x86.md", "tools-bought", ("int8.csv", "deit_tiny.csv", *SWEEP_FILES), tools_bought),
    Block("docs/performance-x86.md", "int8-fast-five", ("int8.csv",), int8_fast_five),
    Block("docs/performance-x86.md", "sweep-inaccurate", SWEEP_FILES, sweep_inaccurate),
    Block("docs/performance-x86.md", "three-cnn-targets", ("int8.csv",), three_cnn_targets),
    Block("docs/performance-x86.md", "three-cnn-cause", ("int8.csv", "int8.peak.json"), three_cnn_cause),
    Block("docs/performance-x86.md", "deit-target", ("int8.csv",), deit_target),
    Block("docs/performance-x86.md", "deit-cause", ("int8.csv", "int8.peak.json"), lambda up: deit_target(up, 1)),
    Block("docs/performance-x86.md", "ort-target", ("int8.csv",), ort_target),
    Block("docs/transformers.md", "deit-tiny", ("deit_tiny.csv",), deit_tiny_table),
    Block("docs/transformers.md", "deit-tiny-vs-study", ("deit_tiny.csv",), deit_tiny_vs_study),
    Block("docs/transformers.md", "deit-tiny-now", ("int8.csv",), deit_tiny_now),
    Block("docs/transformers.md", "p2-variants", ("p2_variants.csv",), p2_variants_table),
    Block("docs/transformers.md", "p2-peaks", tuple(f"{n}.peak.json" for n in PAPER2), p2_peaks),
    Block("docs/transformers.md", "p2-other-sizes", ("p2_mobilevit.csv", "p2_poolformer_s24.csv"), p2_other_sizes),
    Block("docs/transformers.md", "p2-findings", tuple(f"{n}.csv" for n in PAPER2), p2_findings),
    Block("docs/transformers.md", "mobilevit-xxs-flips", ("p2_variants.csv", "p2_mobilevit.csv"), p2_mobilevit_xxs_flips),
    Block("docs/transformers.md", "p2-fp32-partitions", (*(f"{n}.csv" for n in PAPER2), "p2_poolformer_s24.csv"),
          p2_fp32_partitions),
    Block("docs/transformers.md", "swin-partitions", ("p2_224.csv",), swin_partitions),
    Block("docs/transformers.md", "swin-mask", ("swin_mask_int8.csv",), swin_mask),
    Block("docs/pruning.md", "pruning-accuracy", ("pruning_real.csv",), pruning_accuracy),
    Block("docs/pruning.md", "pruning-size", ("pruning_real.csv",), lambda up: pruning_size_table("pruning_real", up)),
    Block("docs/pruning.md", "pruning-check", ("pruning_real_check80.csv", "pruning_real_check85.csv"), pruning_check_table),
    Block("docs/pruning.md", "pruning-smallest", ("pruning_real.csv",), pruning_smallest),
    Block("docs/pruning.md", "pruning-findings", ("pruning_real.csv", "int8_recipes.csv"), pruning_findings),
    Block("docs/pruning.md", "pruning-quickstart", ("quickstart.csv",), pruning_quickstart),
    Block("docs/quantization.md", "recipes-prepare-seconds", ("int8_recipes.csv",), recipes_prepare_seconds),
    Block("docs/quantization.md", "search-vs-percentile", ("pruning_real.csv",), search_vs_percentile),
    Block("docs/quantization.md", "search-seconds", ("pruning_real.csv",), search_seconds),
    Block("docs/quantization.md", "recipes-per-tensor", ("int8_recipes.csv",), lambda up: int8_recipes_table("int8-per-tensor", 0.0, up)),
    Block("docs/quantization.md", "recipes-per-channel", ("int8_recipes.csv",), lambda up: int8_recipes_table("int8", 0.0, up)),
    Block("docs/quantization.md", "recipes-pruned", ("int8_recipes.csv",), lambda up: int8_recipes_table("int8", 0.8, up)),
    Block("docs/quantization.md", "harness-recipes", ("int8_accuracy_recipes.csv", "int8_accuracy_recipes2.csv"), harness_recipes_table),
    Block("docs/quantization.md", "harness-percentiles", ("int8_accuracy_recipes3.csv",), harness_percentiles),
    Block("docs/quantization.md", "meanmax", ("int8_accuracy_meanmax.csv",), meanmax_table),
    Block("docs/quantization.md", "harness-vs-cli", ("int8_harness_vs_cli.csv",), harness_vs_cli_table),
    Block("docs/int8-accuracy.md", "int8-accuracy", ("int8_accuracy.csv",), int8_accuracy_table),
    Block("docs/int8-accuracy.md", "int8-ranges", ("int8_ranges.ranges.csv",), int8_ranges_table),
    Block("docs/phones.md", "pixel-input", ("pixel_input.csv", "pixel_input.json"), pixel_input_table),
    Block("docs/phones.md", "pixel-input-costs", ("pixel_input.csv",), pixel_input_costs),
    Block("docs/phones.md", "pixel-input-invoke", ("pixel_input.csv",), pixel_input_invoke),
    Block("docs/deploy.md", "predict", ("predict.json", "predict.env.json"), predict_table),
    Block("docs/deploy.md", "predict-bounds", ("predict.json",), predict_bounds),
    Block("docs/deploy.md", "predict-memory", ("predict.json",), predict_memory),
    Block("docs/deploy.md", "predict-draft", ("predict.json",), predict_draft),
    Block("docs/deploy.md", "predict-resume", ("predict.json",), predict_resume),
    Block("docs/benchmark-and-report.md", "official", ("official_check.official.json", "official_check_224.json"), official_tables),
    Block("docs/benchmark-and-report.md", "bench-trust", ("bench_trust.csv", "bench_trust.summary.csv"),
          bench_trust_table),
    Block("docs/generalization.md", "synth-styles", (), synth_styles),
    Block("docs/generalization.md", "generalization-real", ("generalization_real.csv", "generalization_real.json"),
          generalization_real),
]


def render(root: Path, file: str) -> tuple[str, list[str]]:
    """(the file's text with every block regenerated, the names of the blocks that changed)."""
    text = (root / file).read_text(encoding="utf-8")
    up = "../" * file.count("/")
    gens = {b.name: b for b in BLOCKS if b.file == file}
    seen, changed = set(), []

    def sub(m):
        kind, name, old = m.group(2), m.group(3), m.group(4)
        if name not in gens:
            raise SystemExit(f"error: {file}: block '{name}' has no generator; add it to BLOCKS in tools/docs_tables.py")
        seen.add(name)
        new = gens[name].render(up)
        if kind == "table" and not new.startswith("\n"):
            new = "\n" + new + "\n"
        if new != old:
            changed.append(name)
        return m.group(1) + new + m.group(5)

    out = BLOCK.sub(sub, text)
    missing = sorted(set(gens) - seen)
    if missing:
        raise SystemExit(f"error: {file}: no marker for block(s) {', '.join(missing)} "
                         f"(<!-- table: NAME --> ... <!-- /table -->)")
    return out, changed


def main(argv=None, root: Path = ROOT) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each block that differs")
    args = ap.parse_args(argv)
    done = {file: render(root, file) for file in dict.fromkeys(b.file for b in BLOCKS)}  # all or nothing
    stale = [f"{file}: {name}" for file, (_, changed) in done.items() for name in changed]
    for file, (text, changed) in done.items():
        if changed and not args.check:
            (root / file).write_text(text, encoding="utf-8")
    for s in stale:
        print(("stale: " if args.check else "rewrote: ") + s)
    if stale and args.check:
        print("error: the blocks above differ from their results files; run python tools/docs_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
