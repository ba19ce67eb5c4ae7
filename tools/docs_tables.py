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
    files = ", ".join(link(up, f"{n}.csv" if (RESULTS / f"{n}.csv").is_file() else f"{n}.json") for n in names)
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
    ci = all(isinstance(r.get("latency_ms_ci_low"), float) for r in one if r["variant"] != "keras")

    def p50(r):
        ms = f"{r['latency_ms_p50']:.2f}"
        return f"{ms} [{r['latency_ms_ci_low']:.2f}, {r['latency_ms_ci_high']:.2f}]" if ci and r["variant"] != "keras" else ms

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
             f"{i5['latency_ms_p50']:.2f} ms (the quickstart, 96 px, 1 thread, one sequential run)"]]
    return "\n" + caption(up, ["quickstart"], "1 thread") + "\n\n" + md_table(["finding", "measured"], body) + "\n"


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


BLOCKS = [
    Block("README.md", "quickstart-wall", ("quickstart.json",), quickstart_wall),
    Block("README.md", "quickstart", ("quickstart.csv", "quickstart.json"), quickstart_table),
    Block("README.md", "quickstart-smaller", ("quickstart.csv",), quickstart_smaller),
    Block("README.md", "headline-amd-epyc", ("int8.csv", "int8.peak.json"), headline_amd),
    Block("README.md", "headline-quickstart", ("quickstart.csv",), quickstart_pruning),
    Block("README.md", "headline-real-weights", ("int8_recipes.csv",), headline_recipes),
    Block("README.md", "headline-intel-xeon", tuple(f"{n}.csv" for n in PAPER2), headline_intel),
    Block("README.md", "backbone-count", tuple(f"{n}.csv" for n in SWEEP), registry_count),
    Block("README.md", "ci-time", ("ci.json",), ci_time),
    Block("docs/development.md", "ci-time", ("ci.json",), ci_time),
    Block("benchmarks/results/README.md", "machines", ("*.json", "*.env.json", "*.peak.json", "*.csv"), results_machines),
    Block("docs/transformers.md", "paper2", tuple(f"{n}.csv" for n in PAPER2), paper2_table),
    Block("docs/training.md", "training-cache", ("training_cache.json",), training_cache_table),
    Block("docs/cluster.md", "ray-cluster", ("ray_cluster.csv", "ray_cluster.json"), cluster_table),
    Block("docs/study.md", "quickstart-wall", ("quickstart.json",), quickstart_wall),
    Block("docs/study.md", "quickstart", ("quickstart.csv", "quickstart.json"), quickstart_table),
    Block("docs/study.md", "quickstart-smaller", ("quickstart.csv",), quickstart_smaller),
    Block("docs/performance-x86.md", "int8", ("int8.csv",), int8_table),
    Block("docs/performance-x86.md", "sweep", tuple(f"{n}.csv" for n in SWEEP), sweep_table),
    Block("docs/performance-x86.md", "sweep-speed", tuple(f"{n}.csv" for n in SWEEP), sweep_speed),
    Block("docs/performance-x86.md", "backbone-count", tuple(f"{n}.csv" for n in SWEEP), registry_count),
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
