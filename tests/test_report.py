"""Tests for gram_tf.stats and gram_tf.report (no TensorFlow; fast)."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sst

from gram_tf.report import stats
from gram_tf.errors import GramTFError
from gram_tf.report import (
    COLUMNS,
    REQUIRED_COLUMNS,
    build_report,
    fmt_bytes,
    fmt_p,
    load_results,
    normalize_row,
)
from gram_tf.report.view import fmt_sp

FIXTURE = Path(__file__).parent / "fixtures" / "results_small.csv"
A, B = "mobilenet_v3_small", "efficientnet_lite0"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rows():
    return load_results([FIXTURE])


@pytest.fixture(scope="module")
def report(tmp_path_factory, rows):
    out = tmp_path_factory.mktemp("report")
    res = build_report(rows, out)
    return out, res, Path(res["report"]).read_text(encoding="utf-8")


def _find(rows, backbone, variant, sparsity=0.0, threads=1, runtime="litert"):
    hits = [r for r in rows if r["backbone"] == backbone and r["variant"] == variant
            and r["sparsity_target"] == sparsity and r["threads"] == threads and r["runtime"] == runtime]
    assert len(hits) == 1, (backbone, variant, sparsity, threads, runtime)
    return hits[0]


def _section(md: str, number: int) -> str:
    start = md.index(f"\n## {number}.")
    nxt = md.find("\n## ", start + 1)
    return md[start: nxt if nxt >= 0 else len(md)]


def _table_line(section: str, *cells: str) -> str:
    prefix = "| " + " | ".join(cells) + " |"
    lines = [ln for ln in section.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, (prefix, lines)
    return lines[0]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ------------------------------------------------------------------------------------- loading


def test_load_csv_types(rows):
    assert len(rows) == 29
    r = _find(rows, A, "fp32")
    assert isinstance(r["threads"], int) and r["threads"] == 1
    assert isinstance(r["n_test"], int) and r["n_test"] == 40
    assert isinstance(r["size_bytes"], int)
    assert isinstance(r["accuracy"], float) and r["accuracy"] == pytest.approx(0.9)
    assert isinstance(r["sparsity_target"], float) and r["sparsity_target"] == 0.0
    # `correct` looks like a number but must stay the exact string (leading zero kept)
    assert isinstance(r["correct"], str) and len(r["correct"]) == 40 and r["correct"].startswith("0")
    with open(FIXTURE, newline="") as fh:
        raw = next(csv.DictReader(fh))
    assert r["correct"] == raw["correct"]
    k = _find(rows, A, "keras", runtime="keras")
    assert k["size_bytes"] is None and k["zip_bytes"] is None and k["correct"] is None
    assert k["speedup_vs_fp32"] is None
    assert list(rows[0].keys()) == COLUMNS


def test_load_json_and_dirs_match_csv(tmp_path, rows):
    jdir = tmp_path / "jrun"
    jdir.mkdir()
    # JSON as a benchmark would write it: typed values, null for missing; one `correct`
    # mangled into a number (leading zeros lost) must be restored from n_test.
    data = [dict(r) for r in rows]
    data[0]["correct"] = int(data[0]["correct"])
    (jdir / "results.json").write_text(json.dumps(data))
    assert load_results([jdir / "results.json"]) == rows
    assert load_results([jdir]) == rows  # directory -> results.json
    assert load_results(str(jdir)) == rows  # single path accepted
    cdir = tmp_path / "crun"
    cdir.mkdir()
    shutil.copy(FIXTURE, cdir / "results.csv")
    assert load_results([cdir]) == rows  # directory -> results.csv
    merged = load_results([FIXTURE, jdir])
    assert len(merged) == 2 * len(rows)


@pytest.mark.parametrize(
    "case",
    ["missing", "empty_dir", "bad_json", "json_not_list", "json_missing_col", "csv_missing_col",
     "bad_number", "bad_correct", "empty_csv"],
)
def test_load_errors(tmp_path, case):
    if case == "missing":
        p = tmp_path / "nope" / "results.csv"
    elif case == "empty_dir":
        p = tmp_path / "emptydir"
        p.mkdir()
    elif case == "bad_json":
        p = tmp_path / "results.json"
        p.write_text('[{"run": "x",')
    elif case == "json_not_list":
        p = tmp_path / "results.json"
        p.write_text('{"run": "x"}')
    elif case == "json_missing_col":
        p = tmp_path / "results.json"
        row = {c: None for c in COLUMNS}
        del row["latency_ms_p50"]
        p.write_text(json.dumps([row]))
    else:
        p = tmp_path / "results.csv"
        text = FIXTURE.read_text()
        header, first = text.splitlines()[:2]
        cols = header.split(",")
        vals = next(csv.reader([first]))
        if case == "csv_missing_col":
            i = cols.index("accuracy")
            del cols[i], vals[i]
        elif case == "bad_number":
            vals[cols.index("accuracy")] = "ninety"
        elif case == "bad_correct":
            vals[cols.index("correct")] = "01x1"
        elif case == "empty_csv":
            cols, vals = [], None
        lines = [",".join(cols)] + ([",".join(vals)] if vals is not None else [])
        p.write_text("\n".join(lines) + ("\n" if cols else ""))
    with pytest.raises(GramTFError) as ei:
        load_results([p])
    msg = str(ei.value)
    assert str(p) in msg and "\n" not in msg
    if case in ("csv_missing_col",):
        assert "accuracy" in msg
    if case == "json_missing_col":
        assert "latency_ms_p50" in msg
    if case == "bad_number":
        assert "accuracy" in msg and "line 2" in msg


def test_required_columns_subset_of_columns():
    assert set(REQUIRED_COLUMNS) <= set(COLUMNS)


# ------------------------------------------------------------------------------------- report


def test_build_report_files(report, rows):
    out, res, md = report
    assert Path(res["report"]) == out / "report.md"
    names = sorted(Path(p).name for p in res["plots"])
    assert names == ["accuracy_vs_latency.png", "size_per_variant.png", "sparsity_vs_accuracy.png"]
    for p in res["plots"]:
        data = Path(p).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
        assert f"]({Path(p).name})" in md  # embedded with a relative link
    # no temp files left behind
    assert sorted(x.name for x in out.iterdir()) == sorted(names + ["report.md", "results.csv"])
    # results.csv: all rows, same column order, round-trips
    with open(out / "results.csv", newline="") as fh:
        header = next(csv.reader(fh))
    with open(FIXTURE, newline="") as fh:
        given = next(csv.reader(fh))
    assert header == given + [c for c in COLUMNS if c not in given]  # columns newer than the file: appended, empty
    assert load_results([out / "results.csv"]) == rows


def _with_scores(rows):
    """The fixture rows with calibration columns and per-image scores: right answers score 0.9 (0.8 after the
    temperature), wrong ones 0.6 (0.55), so keeping the images at >= 0.8 keeps exactly the right ones."""
    out = []
    for r in rows:
        c = r["correct"] or ""  # a row without per-image results gets no scores either
        out.append(dict(r, ece=0.12, ece_adaptive=0.15, brier=0.2, temperature=1.75, ece_ts=0.04,
                        ece_adaptive_ts=0.05, brier_ts=0.18, nll_ts=0.3,
                        confidence=";".join("0.9" if x == "1" else "0.6" for x in c) or None,
                        confidence_ts=";".join("0.8" if x == "1" else "0.55" for x in c) or None))
    return out


def test_calibration_and_selective_prediction_sections(rows, tmp_path):
    scored = _with_scores(rows)
    res = build_report(scored, tmp_path)
    md = Path(res["report"]).read_text(encoding="utf-8")
    assert sorted(Path(p).name for p in res["plots"] if Path(p).name in ("reliability.png", "accuracy_coverage.png")) \
        == ["accuracy_coverage.png", "reliability.png"]
    for name in ("reliability.png", "accuracy_coverage.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC and f"]({name})" in md
    s8 = _section(md, 8)
    assert "## 8. Calibration" in s8
    assert _cells(_table_line(s8, A, "0", "int8", "litert"))[4:] == [
        "0.120", "0.150", "0.200", f"{_find(rows, A, 'int8')['loss']:.3f}", "1.75", "0.040", "0.050", "0.180", "0.300"]
    s9 = _section(md, 9)
    assert "## 9. Selective prediction" in s9
    for bb, ref in ((A, 0.9), (B, 0.925)):
        for r in [x for x in scored if x["backbone"] == bb and x["threads"] == 1 and x["correct"]]:
            acc = r["correct"].count("1") / len(r["correct"])
            line = _cells(_table_line(s9, bb, fmt_sp(r["sparsity_target"]), r["variant"], r["runtime"]))
            # below the fp32 accuracy: only the right answers (>= 0.8) can be kept; at or above it: every image
            want = ("100.0%", "0.55") if acc >= ref - 1e-9 else (f"{100 * acc:.1f}%", "0.8")
            assert line[5:8] == [f"{100 * ref:.1f}%", *want], (bb, r["variant"], line)
    # a target the config names
    named = build_report(scored, tmp_path / "named", selective_target=1.0)
    s9 = _section(Path(named["report"]).read_text(encoding="utf-8"), 9)
    line = _cells(_table_line(s9, B, "0", "int8-per-tensor", "litert"))
    assert line[5:8] == ["100.0%", "75.0%", "0.8"] and "`report.selective_target`" in s9
    # rows without scores: the sections say so, no plot is drawn
    plain = build_report(rows, tmp_path / "plain")
    assert {"reliability.png", "accuracy_coverage.png"} <= set(plain["skipped_plots"])
    assert "No row has per-image scores" in Path(plain["report"]).read_text(encoding="utf-8")


def test_score_columns_are_checked_on_reading(tmp_path):
    row = {c: None for c in COLUMNS}
    row.update(run="r", backbone="b", variant="fp32", runtime="litert", sparsity_target=0, threads=1, accuracy=1.0,
               latency_ms_p50=1.0, confidence="0.9;0.95")
    assert normalize_row(row)["confidence"] == "0.9;0.95"
    assert normalize_row(dict(row, confidence=[0.5, 1.0]))["confidence"] == "0.5;1"  # a JSON writer's list
    with pytest.raises(ValueError, match="confidence_ts"):
        normalize_row(dict(row, confidence_ts="0.9;high"))
    with pytest.raises(ValueError, match="'confidence'"):
        normalize_row(dict(row, confidence="1.2"))


def test_report_sections_and_content(report):
    _, _, md = report
    for n, heading in [(1, "Summary"), (2, "Models and configurations"), (3, "Per-channel vs per-tensor int8"),
                       (4, "Pruning level"), (5, "Statistical tests"), (6, "Plots")]:
        assert f"## {n}. {heading}" in md
    for bb in (A, B):
        assert bb in md
    for v in ("fp32", "fp16", "dynamic", "int8", "int8-per-tensor", "keras"):
        assert f"| {v} |" in _section(md, 2)
    s1 = _section(md, 1)
    assert "CPU threads tested: 1, 2" in s1 and "n_test): 40" in s1
    # auto choices: A -> dense int8, B -> pruned int8 (faster per-tensor rejected)
    line = _table_line(s1, A, "1")
    assert "**int8** (auto)" in line and _cells(line)[3] == "0"
    line = _table_line(s1, B, "1")
    assert "**int8** (auto)" in line and _cells(line)[3] == "0.5"
    # model table: CI and n/a handling, sizes in MB
    s2 = _section(md, 2)
    assert "n = 40 test images" in s2
    keras = _table_line(s2, A, "0", "keras", "keras")
    assert "90.0% n/a" in keras and "n/a" in _cells(keras)[8]
    fp32 = _table_line(s2, A, "0", "fp32", "litert")
    assert "90.0% [" in fp32 and "6.14 MB" in fp32 and "12.4" in fp32
    assert "**auto** (1t, 2t)" in _table_line(s2, B, "0.5", "int8", "litert")
    # the int8 recipe each full-integer artifact got (the results' int8_recipe column) is shown
    assert "int8 recipe" in s2
    assert _cells(_table_line(s2, A, "0", "int8-per-tensor", "litert"))[-1] == "cle+bc"
    assert _cells(_table_line(s2, A, "0", "int8", "litert"))[-1] == "minmax"
    assert _cells(fp32)[-1] == ""
    # pruning: x smaller by zip vs dense fp32
    s4 = _section(md, 4)
    line = _table_line(s4, A, "0.5", "0.499", "int8")
    ref = 5680425 / 1022437  # fixture zip sizes (dense fp32 / pruned int8)
    assert f"{ref:.2f}×" in line


def test_report_mcnemar_pvalues(report, rows):
    _, _, md = report
    s3, s5 = _section(md, 3), _section(md, 5)
    for bb in (A, B):
        ref = _find(rows, bb, "fp32")
        for var in ("fp16", "dynamic", "int8", "int8-per-tensor"):
            m = _find(rows, bb, var)
            mc = stats.mcnemar(stats.correct_array(ref["correct"]), stats.correct_array(m["correct"]))
            cells = _cells(_table_line(s5, bb, "0", var, "litert"))
            assert cells[5:7] == [str(mc["b"]), str(mc["c"])]
            assert cells[9] == fmt_p(mc["p_value"])
        # section 3 side by side: per-channel p and per-tensor p
        cells = _cells(_table_line(s3, bb, "0"))
        for var, col in (("int8", 6), ("int8-per-tensor", 10)):
            m = _find(rows, bb, var)
            mc = stats.mcnemar(stats.correct_array(ref["correct"]), stats.correct_array(m["correct"]))
            assert cells[col] == fmt_p(mc["p_value"])
    # the fixture was built with known discordances
    assert _cells(_table_line(s5, B, "0", "int8-per-tensor", "litert"))[9] == fmt_p(2 * 0.5 ** 7) == "0.0156"
    assert _cells(_table_line(s5, A, "0", "int8-per-tensor", "litert"))[9] == "0.625"
    assert "Friedman χ²" in s5 and "blocks = test images" in s5
    assert "ranking backbones needs at least 3" in s5


def test_report_auto_return(report):
    _, res, _ = report
    auto = res["auto"]
    assert len(auto) == 4
    a1 = auto[f"gram_2025_03/{A}/threads=1"]
    assert (a1["variant"], a1["sparsity_target"]) == ("int8", 0.0)
    b2 = auto[f"gram_2025_03/{B}/threads=2"]
    assert (b2["variant"], b2["sparsity_target"]) == ("int8", 0.5)
    json.dumps(auto)  # JSON-friendly


def test_report_without_pruning_or_correct(tmp_path, rows):
    sub = [dict(r, correct=None) for r in rows if r["sparsity_target"] == 0]
    res = build_report(sub, tmp_path / "r", title="Dense only")
    md = Path(res["report"]).read_text()
    assert md.startswith("# Dense only")
    assert "No pruned models" in md
    assert not (tmp_path / "r" / "sparsity_vs_accuracy.png").exists()
    assert "sparsity_vs_accuracy.png" in res["skipped_plots"]
    assert len(res["plots"]) == 2
    s5 = _section(md, 5)
    assert "| n/a | n/a | n/a | n/a | n/a |" in _table_line(s5, A, "0", "int8", "litert")
    assert "Skipped: only 0 model(s)" in s5
    with pytest.raises(GramTFError):
        build_report([], tmp_path / "empty")


def test_report_three_backbones_friedman(tmp_path, rows):
    # A third backbone (a copy of A, far less accurate in every configuration) enables the backbone ranking.
    extra = []
    for r in rows:
        if r["backbone"] == A and r["runtime"] == "litert":
            c = r["correct"]
            i = c.index("1")
            extra.append(dict(r, backbone="resnet_tiny", correct=c[:i] + "0" + c[i + 1:],
                              accuracy=r["accuracy"] - 0.3))
    res = build_report(rows + extra, tmp_path / "r3")
    md = Path(res["report"]).read_text()
    s5 = _section(md, 5)
    sub = s5[s5.index("over backbones"):]
    assert "Friedman χ²" in sub and "Skipped" not in sub
    line = _table_line(sub, "3", "resnet_tiny")  # always worst -> rank 3
    assert _cells(line)[2] == "3.00"


def test_normalize_row_idempotent(rows):
    assert normalize_row(rows[0]) == rows[0]
    with pytest.raises(ValueError, match="accuracy"):
        normalize_row({"accuracy": "x"})


def test_fmt_helpers():
    assert fmt_p(1.0) == "1"
    assert fmt_p(0.015625) == "0.0156"
    assert fmt_p(2.5e-6) == "2.5e-06"
    assert fmt_p(None) == "n/a"
    assert fmt_bytes(6141000) == "6.14 MB"
    assert fmt_bytes(20500) == "20.5 KB"
    assert fmt_bytes(None) == "n/a"


# ------------------------------------------------------------------------------------- stats


def test_bootstrap_ci_contains_estimate_and_shrinks():
    rng = np.random.default_rng(1)
    small = rng.random(40) < 0.8
    big = rng.random(4000) < 0.8
    lo_s, hi_s = stats.bootstrap_ci(small)
    lo_b, hi_b = stats.bootstrap_ci(big)
    assert lo_s <= small.mean() <= hi_s and lo_s < hi_s
    assert lo_b <= big.mean() <= hi_b
    assert (hi_b - lo_b) < (hi_s - lo_s) / 3
    # roughly the normal-approximation width for n=4000: 2*1.96*sqrt(p(1-p)/n) ~ 0.025
    p = big.mean()
    assert hi_b - lo_b == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / big.size), rel=0.15)
    assert stats.bootstrap_ci(small, seed=3) == stats.bootstrap_ci(small, seed=3)
    assert stats.bootstrap_ci("1111") == (1.0, 1.0)
    with pytest.raises(ValueError):
        stats.bootstrap_ci(np.array([], dtype=bool))


def test_mcnemar_exact_and_chi2():
    a = np.array([1] * 10 + [0] * 5 + [1] * 5, dtype=bool)
    b = np.array([0] * 10 + [0] * 5 + [1] * 5, dtype=bool)
    r = stats.mcnemar(a, b)
    assert (r["b"], r["c"], r["method"]) == (10, 0, "exact-binomial")
    assert r["p_value"] == pytest.approx(2 * 0.5 ** 10)
    r2 = stats.mcnemar(b, a)
    assert (r2["b"], r2["c"]) == (0, 10) and r2["p_value"] == pytest.approx(r["p_value"])
    # chi-square branch: b=30, c=10 -> (|30-10|-1)^2/40 = 9.025; chi2(1) sf = erfc(sqrt(x/2))
    a = np.array([1] * 30 + [0] * 10 + [1] * 7, dtype=bool)
    b = np.array([0] * 30 + [1] * 10 + [1] * 7, dtype=bool)
    r = stats.mcnemar(a, b)
    assert (r["b"], r["c"], r["method"]) == (30, 10, "chi2-cc")
    assert r["statistic"] == pytest.approx(9.025)
    assert r["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    # boundary: b+c = 24 exact, 25 chi-square
    def pair(bb, cc):
        return (np.array([1] * bb + [0] * cc, bool), np.array([0] * bb + [1] * cc, bool))
    r24 = stats.mcnemar(*pair(14, 10))
    assert r24["method"] == "exact-binomial"
    assert r24["p_value"] == pytest.approx(2 * sum(math.comb(24, i) for i in range(11)) / 2 ** 24)
    assert stats.mcnemar(*pair(15, 10))["method"] == "chi2-cc"
    # no discordant pairs
    r0 = stats.mcnemar("0110", "0110")
    assert (r0["b"], r0["c"], r0["p_value"]) == (0, 0, 1.0)
    with pytest.raises(ValueError):
        stats.mcnemar("01", "011")


def test_friedman_nemenyi_best_model_and_cd():
    rng = np.random.default_rng(0)
    n, k = 12, 4
    base = rng.random((n, k - 1))
    scores = np.column_stack([base.max(axis=1) + 0.1, base])  # model 0 always best
    names = ["best", "m1", "m2", "m3"]
    res = stats.friedman_nemenyi(scores, names)
    assert res["avg_ranks"]["best"] == 1.0
    assert res["order"][0] == "best"
    assert sum(res["avg_ranks"].values()) == pytest.approx(k * (k + 1) / 2)
    q = sst.studentized_range.ppf(0.95, k, np.inf) / math.sqrt(2)
    assert res["q_alpha"] == pytest.approx(2.569, abs=1e-3)  # Demsar (2006) table, k=4, alpha .05
    assert res["cd"] == pytest.approx(q * math.sqrt(k * (k + 1) / (6 * n)))
    ref = sst.friedmanchisquare(*scores.T)
    assert res["statistic"] == pytest.approx(ref.statistic) and res["p_value"] == pytest.approx(ref.pvalue)
    # pairwise significance follows |rank diff| > CD
    for p in res["pairwise"]:
        d = abs(res["avg_ranks"][p["a"]] - res["avg_ranks"][p["b"]])
        assert p["significant"] == (d > res["cd"])
    # strictly ordered models over many blocks: best and worst must differ, best is alone in its group
    strict = np.tile(np.array([4.0, 3.0, 2.0, 1.0]), (30, 1))
    r2 = stats.friedman_nemenyi(strict, names)
    assert r2["p_value"] < 1e-10
    assert [p["significant"] for p in r2["pairwise"] if {p["a"], p["b"]} == {"best", "m3"}] == [True]
    assert ["best"] in r2["groups"] or r2["groups"][0][0] == "best"
    assert all(len(g) >= 1 for g in r2["groups"])
    assert stats.nemenyi_cd(3, 10)[1] == pytest.approx(2.343, abs=1e-3)


def test_friedman_skips_and_ties():
    assert stats.friedman_nemenyi(np.ones((5, 2)), ["a", "b"]) is None
    assert "at least 3 models" in stats.friedman_skip_reason(np.ones((5, 2)), ["a", "b"])
    assert stats.friedman_nemenyi(np.ones((1, 3)), ["a", "b", "c"]) is None
    assert "at least 2 blocks" in stats.friedman_skip_reason(np.ones((1, 3)), ["a", "b", "c"])
    tied = stats.friedman_nemenyi(np.ones((6, 3)), ["a", "b", "c"])
    assert tied["all_tied"] and tied["p_value"] == 1.0 and tied["statistic"] == 0.0
    assert tied["avg_ranks"] == {"a": 2.0, "b": 2.0, "c": 2.0}
    assert tied["groups"] == [["a", "b", "c"]]


def test_pareto_front():
    pts = [(10.0, 0.90), (5.0, 0.85), (20.0, 0.90), (4.0, 0.80), (6.0, 0.84), (5.0, 0.85), (30.0, 0.95),
           (None, 0.99)]
    assert stats.pareto_front(pts) == [True, True, False, True, False, True, True, False]
    assert stats.pareto_front([]) == []
    assert stats.pareto_front([(1.0, 0.5)]) == [True]


def _row(variant, acc, p50, sparsity=0.0, runtime="litert", threads=1, backbone="bb", run="r"):
    return {"run": run, "backbone": backbone, "variant": variant, "runtime": runtime,
            "sparsity_target": sparsity, "threads": threads, "accuracy": acc, "latency_ms_p50": p50,
            "size_bytes": 1000}


def test_select_auto_threshold():
    rows = [
        _row("fp32", 0.90, 10.0),
        _row("dynamic", 0.895, 6.0),          # within 1 pp
        _row("int8", 0.89, 4.0),              # exactly 1 pp below: accepted (>=, not >)
        _row("int8-per-tensor", 0.885, 3.0),  # 1.5 pp below: rejected although fastest
        _row("keras", 0.95, 1.0, runtime="keras"),  # not LiteRT: never chosen
        _row("fp32", 0.90, 20.0, threads=2),
        _row("int8", 0.80, 1.0, threads=2),   # too inaccurate -> fp32 itself is chosen
        _row("int8", 0.99, 1.0, backbone="noref"),  # no fp32 reference: group skipped
    ]
    auto = stats.select_auto(rows)
    assert set(auto) == {("r", "bb", 1), ("r", "bb", 2)}
    assert auto[("r", "bb", 1)]["variant"] == "int8"
    assert auto[("r", "bb", 2)]["variant"] == "fp32"
    strict = stats.select_auto(rows, max_drop=0.0075)
    assert strict[("r", "bb", 1)]["variant"] == "dynamic"
    loose = stats.select_auto(rows, max_drop=0.02)
    assert loose[("r", "bb", 1)]["variant"] == "int8-per-tensor"
    # 0.52 - 0.05 evaluates to 0.47000000000000003 in floating point: an exact 5 pp drop is still accepted
    edge = [_row("fp32", 0.52, 10.0), _row("int8", 0.47, 4.0)]
    assert stats.select_auto(edge, max_drop=0.05)[("r", "bb", 1)]["variant"] == "int8"
    assert stats.select_auto(edge, max_drop=0.049)[("r", "bb", 1)]["variant"] == "fp32"
    # a pruned fp32 row is not a reference
    assert stats.select_auto([_row("fp32", 0.9, 5.0, sparsity=0.5)]) == {}


def test_select_auto_on_fixture(rows):
    auto = stats.select_auto(rows)
    for t in (1, 2):
        a = auto[("gram_2025_03", A, t)]
        assert (a["variant"], a["sparsity_target"]) == ("int8", 0.0)
        # the faster per-tensor and pruned int8 models were below the threshold
        for var, sp in (("int8-per-tensor", 0.0), ("int8", 0.5)):
            other = _find(rows, A, var, sparsity=sp, threads=t)
            assert other["latency_ms_p50"] < a["latency_ms_p50"] and other["accuracy"] < a["accuracy"] - 0.01
        b = auto[("gram_2025_03", B, t)]
        assert (b["variant"], b["sparsity_target"]) == ("int8", 0.5)


def test_within_drop_counts_exactly_one_pp_as_within():
    """2 of 200 images lost is 1 pp: round-off (0.87 - 0.86 = 0.01000000000000001) must not reject it."""
    from gram_tf.convert import recover_accuracy
    from gram_tf.metrics import within_drop

    assert 0.87 - 0.86 > 0.01  # the round-off this guards against
    assert within_drop(0.87, 0.86, 0.01) and within_drop(0.9, 0.89, 0.01)
    assert not within_drop(0.87, 0.855, 0.01)
    tried = []

    def try_nodes(nodes):
        tried.append(len(nodes))
        return {1: 0.85, 2: 0.86}[len(nodes)], f"blob{len(nodes)}"

    acc, payload, nodes, steps = recover_accuracy(try_nodes, ["a", "b", "c", "d"], 0.87, 0.01, 64)
    assert (acc, payload, nodes, tried) == (0.86, "blob2", ["a", "b"], [1, 2])


def test_report_names_the_smallest_artifact_within_budget(report, rows):
    _, _, md = report
    s4 = _section(md, 4)
    for bb in (A, B):
        lite = [r for r in rows if r["backbone"] == bb and r["runtime"] == "litert" and r["accuracy"] is not None]
        ref = next(r for r in lite if r["variant"] == "fp32" and not r["sparsity_target"])
        ok = [r for r in lite if r["accuracy"] >= ref["accuracy"] - 0.01 - 1e-9 and r["zip_bytes"]]
        best = min(ok, key=lambda r: r["zip_bytes"])
        line = next(ln for ln in s4.splitlines() if ln.startswith(f"- {bb}:"))
        assert f"**{fmt_sp(best['sparsity_target'])} {best['variant']}**" in line
        assert f"{ref['zip_bytes'] / best['zip_bytes']:.2f}× smaller" in line


def _timed(variant, acc, p50, lo, hi, size, sparsity=0.0, threads=1):
    return {**_row(variant, acc, p50, sparsity=sparsity, threads=threads), "size_bytes": size,
            "latency_ms_ci_low": lo, "latency_ms_ci_high": hi}


def test_auto_prefers_the_smallest_of_the_candidates_tied_with_the_fastest():
    rows = [
        _timed("fp32", 0.90, 1.00, 0.95, 1.05, 4000),
        _timed("int8", 0.90, 0.60, 0.57, 0.66, 1200),             # fastest
        _timed("int8-per-tensor", 0.895, 0.64, 0.61, 0.70, 900),  # tied with it, smaller
        _timed("int8", 0.90, 0.62, 0.58, 0.69, 300, sparsity=0.5),  # tied, smallest
        _timed("int8", 0.70, 0.61, 0.58, 0.64, 100, sparsity=0.85),  # smallest of all, too inaccurate
        _timed("dynamic", 0.90, 0.80, 0.76, 0.84, 200),           # smaller but clearly slower
    ]
    detail = stats.auto_choices(rows)[("r", "bb", 1)]
    assert detail["fastest"]["variant"] == "int8" and detail["fastest"]["sparsity_target"] == 0.0
    assert (detail["choice"]["variant"], detail["choice"]["sparsity_target"]) == ("int8", 0.5)
    assert {r["variant"] for r in detail["tied"]} == {"int8", "int8-per-tensor"}
    # without CIs (imported device logs, old rows) nothing is tied: the lowest p50 wins
    points = [{k: v for k, v in r.items() if not k.startswith("latency_ms_ci")} for r in rows]
    assert stats.select_auto(points)[("r", "bb", 1)]["size_bytes"] == 1200
    # one side without a CI is no tie either
    assert not stats.tied(rows[1], points[2]) and stats.tied(rows[1], rows[2])


def test_auto_never_picks_a_larger_tied_candidate():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 9))
        rows = [_timed("fp32", 0.9, 1.0, 0.9, 1.1, 5000)]
        for i in range(n):
            p50 = float(rng.uniform(0.3, 1.2))
            half = float(rng.uniform(0.0, 0.2))
            rows.append(_timed(f"v{i}", float(rng.choice([0.9, 0.895, 0.85])), p50, p50 - half, p50 + half,
                               int(rng.integers(100, 6000)), sparsity=float(i + 1) / 10))
        detail = stats.auto_choices(rows)[("r", "bb", 1)]
        choice, fastest = detail["choice"], detail["fastest"]
        ok = [r for r in rows if r["accuracy"] >= 0.89]
        assert fastest["latency_ms_p50"] == min(r["latency_ms_p50"] for r in ok)
        for r in ok:
            if r is fastest or stats.tied(r, fastest):
                assert r["size_bytes"] >= choice["size_bytes"]
        assert choice is fastest or stats.tied(choice, fastest)


def test_report_says_tied_within_noise_and_flags_a_noisy_machine(tmp_path):
    rows = [
        {**_timed("fp32", 0.90, 1.00, 0.95, 1.05, 4000), "noise_pct": 4.0, "rounds": 7},
        {**_timed("int8", 0.90, 0.60, 0.57, 0.66, 1200), "noise_pct": 4.0, "rounds": 7,
         "speedup_vs_fp32": 1.66, "speedup_ci_low": 1.5, "speedup_ci_high": 1.8},
        {**_timed("int8-per-tensor", 0.90, 0.64, 0.61, 0.70, 900), "noise_pct": 4.0, "rounds": 7},
    ]
    text = build_report(rows, tmp_path / "quiet")["report"].read_text()
    assert "tied within noise with int8; smallest" in text
    assert "1.66× [1.50, 1.80]" in text and "0.64 [0.61, 0.70]" in text
    assert "4.0 % at 1 thread(s)" in text and "unreliable" not in text
    loud = [{**r, "noise_pct": 40.0} for r in rows]
    text = build_report(loud, tmp_path / "loud")["report"].read_text()
    assert "**Latency conclusions unreliable**: timing noise 40 %" in text and text.count("unreliable") == 1
    assert "unreliable" not in build_report(loud, tmp_path / "lax", max_noise_pct=50)["report"].read_text()
    assert stats.noise_warning(loud, 15.0).startswith("timing noise 40 % (fp32 round-to-round spread at 1 thread(s))")


def test_among_tied_candidates_of_one_size_the_smaller_zip_wins():
    """A pruned file is as large as its dense twin; it is the smaller one to ship."""
    dense = {**_timed("int8", 0.90, 0.60, 0.55, 0.70, 1000), "zip_bytes": 800}
    pruned = {**_timed("int8", 0.895, 0.62, 0.56, 0.71, 1000, sparsity=0.75), "zip_bytes": 300}
    rows = [_timed("fp32", 0.90, 1.0, 0.95, 1.05, 4000), dense, pruned]
    assert stats.select_auto(rows)[("r", "bb", 1)] is pruned


# ------------------------------------------------------------------------ external test sets (issue 33)


def _ext(variant, acc, name="other_lab", sparsity=0.0):
    """A row of an external test set: accuracy only, no timing (as gram_tf.bench writes it)."""
    return {"run": "r", "backbone": "bb", "variant": variant, "runtime": "litert", "sparsity_target": sparsity,
            "threads": None, "accuracy": acc, "latency_ms_p50": None, "size_bytes": 1000, "dataset": name}


def _shift_rows():
    timed = [
        _timed("fp32", 0.90, 1.00, 0.95, 1.05, 4000),
        _timed("int8", 0.90, 0.50, 0.48, 0.52, 1000),             # fastest; loses 10 pp on the external set
        _timed("dynamic", 0.895, 0.80, 0.78, 0.82, 1200),         # holds up everywhere
        _timed("int8-per-tensor", 0.85, 0.40, 0.38, 0.42, 900),   # fastest of all; 5 pp down in-domain only
    ]
    return timed + [_ext("fp32", 0.80), _ext("int8", 0.70), _ext("dynamic", 0.80), _ext("int8-per-tensor", 0.80)]


@pytest.mark.parametrize("auto_on, chosen", [("in_domain", "int8"), ("external", "int8-per-tensor"),
                                             ("worst", "dynamic")])
def test_auto_on_picks_with_the_accuracy_of_the_sets_it_names(auto_on, chosen):
    rows = _shift_rows()
    assert stats.select_auto(rows, auto_on=auto_on)[("r", "bb", 1)]["variant"] == chosen
    # external rows are never picked nor grouped: they are not timed
    assert set(stats.auto_choices(rows, auto_on=auto_on)) == {("r", "bb", 1)}


def test_auto_on_without_external_sets_is_the_test_split():
    timed = _shift_rows()[:4]
    for auto_on in ("worst", "external"):  # external with nothing external: no empty check that passes all
        assert stats.auto_sets(timed, auto_on) == [None]
        assert stats.select_auto(timed, auto_on=auto_on)[("r", "bb", 1)]["variant"] == "int8"
    # a candidate with no row on a set its reference has is not vouched for there
    rows = _shift_rows()[:4] + [_ext("fp32", 0.80), _ext("int8-per-tensor", 0.80)]
    assert stats.select_auto(rows, auto_on="external")[("r", "bb", 1)]["variant"] == "int8-per-tensor"
    rows = _shift_rows()[:4] + [_ext("fp32", 0.80), _ext("dynamic", 0.80)]
    assert stats.select_auto(rows, auto_on="external")[("r", "bb", 1)]["variant"] == "dynamic"
    with pytest.raises(ValueError, match="auto_on"):
        stats.auto_sets(timed, "somewhere")


def test_report_states_where_auto_checks_accuracy(tmp_path):
    rows = _shift_rows()
    text = build_report(rows, tmp_path / "w")["report"].read_text()
    assert "on the test split and on every external test set (other_lab)" in text and "**dynamic** (auto)" in text
    text = build_report(rows, tmp_path / "i", auto_on="in_domain")["report"].read_text()
    assert "percentage points on the test split;" in text and "**int8** (auto)" in text


def test_paired_drop_and_excess_cis():
    ref, model = "1" * 40, "1" * 36 + "0" * 4  # 4 images lost, none gained: a 10 pp drop
    drop, lo, hi = stats.paired_drop_ci(ref, model)
    assert drop == pytest.approx(0.1) and 0.0 <= lo < 0.1 < hi <= 0.25
    assert stats.paired_drop_ci(ref, model) == (drop, lo, hi)  # deterministic per seed
    assert stats.paired_drop_ci(ref, ref) == (0.0, 0.0, 0.0)
    # the same images gained and lost: drop 0, a CI around it
    d, lo2, hi2 = stats.paired_drop_ci("1100" * 10, "0011" * 10)
    assert d == 0.0 and lo2 < 0 < hi2
    # paired: 4 discordant images of 40 give a narrower CI than an unpaired difference of accuracies would
    r2, m2 = "1" * 30 + "0" * 10, "0" * 4 + "1" * 26 + "0" * 10
    _, plo, phi = stats.paired_drop_ci(r2, m2)
    a, b = stats.bootstrap_ci(r2), stats.bootstrap_ci(m2)
    assert phi - plo < 0.5 * ((b[1] - b[0]) + (a[1] - a[0]))
    ex, elo, ehi = stats.drop_excess_ci(ref, ref, "1" * 40, "1" * 20 + "0" * 20)
    assert ex == pytest.approx(0.5) and elo > 0.3
    ex, elo, ehi = stats.drop_excess_ci(ref, model, ref, model)
    assert ex == 0.0 and elo < 0 < ehi  # the same drop in and out of domain: no excess
    assert stats.agreement("0;1;1;0", "0;1;0;0") == 0.75 and stats.agreement("0;1", "0;1;1") is None
    with pytest.raises(ValueError, match="paired"):
        stats.paired_drop_ci("11", "111")


def _with_external(rows, name="other_lab"):
    """The fixture plus external rows for backbone A: fp32 and dynamic right on 36 of 40 images, int8 on 16."""
    ref_c, ok_c, bad_c = "1" * 36 + "0" * 4, "1" * 36 + "0" * 4, "1" * 16 + "0" * 24
    pred = ";".join("0" * 20 + "1" * 20)
    worse = ";".join("0" * 10 + "1" * 30)  # 10 of 40 images get another class than fp32's
    ext = []
    for var, c, p in (("fp32", ref_c, pred), ("dynamic", ok_c, pred), ("int8", bad_c, worse)):
        base = _find(rows, A, var)
        ext.append({**base, "threads": None, "latency_ms_p50": None, "latency_ms_ci_low": None,
                    "latency_ms_ci_high": None, "round_ms": None, "dataset": name, "correct": c,
                    "accuracy": c.count("1") / 40, "n_test": 40, "predicted": p})
    return list(rows) + ext


def test_report_shift_section_flags_a_variant_worse_off_domain(tmp_path, rows):
    res = build_report(_with_external(rows), tmp_path / "shift")
    md = Path(res["report"]).read_text()
    section = md[md.index("## Does compression hurt generalization?"):]
    bad = _cells(_table_line(section, "other_lab", A, "0", "int8", "litert"))
    ok = _cells(_table_line(section, "other_lab", A, "0", "dynamic", "litert"))
    assert bad[-1] == "**worse off-domain**" and ok[-1] == ""
    assert bad[6] == "40.0% (90.0%)" and bad[8].startswith("+50.0 [") and bad[10] == "75.0%"
    ref = _find(rows, A, "fp32")
    drop_in = stats.paired_drop_ci(ref["correct"], _find(rows, A, "int8")["correct"])
    assert bad[7] == f"{100 * drop_in[0]:+.1f} [{100 * drop_in[1]:+.1f}, {100 * drop_in[2]:+.1f}]"
    assert bad[11] == fmt_p(stats.mcnemar("1" * 36 + "0" * 4, "1" * 16 + "0" * 24)["p_value"])
    assert "**Answer: yes, for 1 of 2**" in section and "mobilenet_v3_small/int8 on other_lab" in section
    # the timed sections read the in-domain rows only: same row count, same auto choices as without the set
    plain = build_report(rows, tmp_path / "plain", auto_on="in_domain")
    assert f"Result rows: {len(rows)} (" in md and res["auto"] != plain["auto"]  # worst: A's int8 is out
    assert build_report(_with_external(rows), tmp_path / "in", auto_on="in_domain")["auto"] == plain["auto"]
    # results.csv keeps every row, external ones included, in one flat table
    back = load_results([tmp_path / "shift" / "results.csv"])
    assert sorted(r["dataset"] or "" for r in back).count("other_lab") == 3
    text = Path(plain["report"]).read_text()
    assert "No external test sets in these results" in text


def test_external_rows_alone_are_not_a_report(tmp_path, rows):
    ext = [r for r in _with_external(rows) if r.get("dataset") == "other_lab"]
    with pytest.raises(GramTFError, match="no in-domain result rows"):
        build_report(ext, tmp_path / "x")
    with pytest.raises(ValueError, match="predicted"):
        normalize_row({**ext[0], "predicted": "0;x"})
