"""The docs' measured numbers come from benchmarks/results/* through tools/docs_tables.py: CI fails when
a generated block drifts from what the script produces, and the check sees a hand-edited number."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import docs_tables  # noqa: E402


def test_every_generated_block_matches_its_results_files():
    proc = subprocess.run([sys.executable, "tools/docs_tables.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _copy_docs(tmp_path: Path) -> Path:
    for file in {b.file for b in docs_tables.BLOCKS}:
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / file, tmp_path / file)
    return tmp_path


def test_a_hand_edited_number_inside_a_block_fails_the_check(tmp_path, capsys):
    root = _copy_docs(tmp_path)
    readme = root / "README.md"
    text = readme.read_text()
    start = text.index("<!-- table: quickstart -->")
    row = text.index("| 0 | fp32 | ", start)
    end = text.index("\n", row)
    line = text[row:end]
    edited = line.replace(" | 0.844 | ", " | 0.845 | ", 1)
    assert edited != line
    readme.write_text(text[:row] + edited + text[end:])
    assert docs_tables.main(["--check"], root=root) == 1
    assert "README.md: quickstart" in capsys.readouterr().out
    # the rewrite puts the number from the results file back
    assert docs_tables.main([], root=root) == 0
    assert docs_tables.main(["--check"], root=root) == 0
    assert line in readme.read_text()


def test_a_block_without_a_generator_is_an_error(tmp_path):
    root = _copy_docs(tmp_path)
    (root / "docs" / "study.md").write_text((root / "docs" / "study.md").read_text()
                                            + "\n<!-- value: no-such-block -->1.0<!-- /value -->\n")
    with pytest.raises(SystemExit, match="no-such-block"):
        docs_tables.main(["--check"], root=root)


def test_quickstart_table_shows_confidence_intervals_when_the_results_have_them(tmp_path, monkeypatch):
    src = docs_tables.RESULTS
    import csv

    with (src / "quickstart.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    extra = ["latency_ms_ci_low", "latency_ms_ci_high", "speedup_ci_low", "speedup_ci_high", "noise_pct", "rounds"]
    for r in rows:
        if not r["latency_ms_p50"]:  # external-set rows carry accuracy only
            continue
        p50, x = float(r["latency_ms_p50"]), float(r["speedup_vs_fp32"])
        r.update(latency_ms_ci_low=p50 * 0.97, latency_ms_ci_high=p50 * 1.03, speedup_ci_low=x * 0.95,
                 speedup_ci_high=x * 1.04, noise_pct=2.5, rounds=5)
    with (tmp_path / "quickstart.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rows[0].keys()])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "quickstart.json").write_text(json.dumps({"environment": {"cpu": "Test CPU", "cores": 4,
                                                                          "isa": "avx2+fma", "wall_s": 61},
                                                          "rows": []}))
    monkeypatch.setattr(docs_tables, "RESULTS", tmp_path)
    for fn in (docs_tables.rows, docs_tables.load_json, docs_tables.environment):
        fn.cache_clear()
    try:
        table = docs_tables.quickstart_table("")
        assert "| p50 ms [95% CI] |" in table and "speed-up vs fp32 [95% CI]" in table
        r = next(r for r in rows if r["variant"] == "int8" and float(r["sparsity_target"]) == 0 and r["threads"] == "1"
                 and r["latency_ms_p50"])
        p50, x = float(r["latency_ms_p50"]), float(r["speedup_vs_fp32"])
        cells = (f"| {p50:.2f} [{p50 * 0.97:.2f}, {p50 * 1.03:.2f}] | {float(r['images_per_s']):.0f} | "
                 f"{x:.2f}× [{x * 0.95:.2f}, {x * 1.04:.2f}] |")
        assert f"| 0 | int8 | {float(r['accuracy']):.3f} |" in table and cells in table
        assert "4-core Test CPU (avx2, fma), 1 thread, 5 timing rounds" in table
        assert docs_tables.quickstart_wall("") == "1 min 1 s on a 4-core Test CPU (avx2, fma)"
    finally:
        for fn in (docs_tables.rows, docs_tables.load_json, docs_tables.environment):
            fn.cache_clear()


def test_a_table_mixing_machines_is_refused():
    # pruning_real ran on an Intel Xeon, its re-checks on an AMD EPYC: they need a table each
    with pytest.raises(SystemExit, match="different machines"):
        docs_tables.caption("", ["pruning_real", "pruning_real_check80"], "1 thread")
    assert "AMD EPYC" in docs_tables.caption("", ["pruning_real_check80", "pruning_real_check85"], "1 thread")
