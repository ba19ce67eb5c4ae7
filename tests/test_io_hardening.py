"""Hostile input to bench, benchmark logs, integrity checks, predict result files and metadata labels
(issue 36). Every case is one `error:` line (exit 2) or is handled, never a traceback, a hang, or a
silent pass. Built on the small old-format .tflite fixture: no training, no TensorFlow conversion."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gram_tf.cli import main
from gram_tf.deploy.metadata import embed_metadata, read_metadata
from gram_tf.errors import GramTFError

from .conftest import deadline

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = FIXTURES / "old_format" / "old_format_int8.tflite"
OTHER_MODEL = FIXTURES / "old_format" / "old_format_fp32.tflite"


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.split("\n") if line.strip()]
    assert len(lines) == 1 and lines[0].split("\r")[-1].startswith("error: "), res.output
    for n in needles:
        assert n in lines[0], res.output




def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def models(tmp_path):
    """A models folder as convert writes it: the artifact and a manifest.json with its sha256."""
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / MODEL.name
    shutil.copy(MODEL, model)
    (folder / "manifest.json").write_text(json.dumps({"artifacts": [
        {"file": model.name, "backbone": "tiny", "variant": "int8", "sha256": _sha(model)}]}))
    return model


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.fixture
def no_timing(monkeypatch):
    """bench's worker replaced: a test fails if anything is timed, unless it asks for fake timings."""
    from gram_tf.bench import litert
    from gram_tf.deploy.timing import round_stats

    timed = []

    def fake(jobs, rounds, runs, warmup, max_seconds=None, bar=None):
        timed.extend(Path(path) for _, path, _ in jobs.values())
        return {key: {"init_ms": 1.0, "first_ms": 1.0, **round_stats([[1.0, 1.2]] * rounds), "peak_rss_mb": 10.0}
                for key in jobs}

    monkeypatch.setattr(litert, "time_in_rounds", fake)
    return timed


def _bench(*args):
    return CliRunner().invoke(main, ["bench", "run", *map(str, args), "--no-keras"])


# --------------------------------------------------------------- bench: manifests, sidecars, inputs
@pytest.mark.parametrize("where, content, needle", [
    ("sidecar", "[1, 2]", "must hold a JSON object"),
    ("sidecar", '{"artifact": "x"}', '"artifact" is not an object'),
    ("manifest", '{"artifacts": "oops"}', '"artifacts" is not a list'),
    ("manifest", '{"artifacts": [1, "x", null]}', '"artifacts" is not a list'),
    ("manifest", "[1]", '"artifacts" is not a list'),
    ("manifest", "{not json", "not valid JSON"),
    ("manifest", '{"artifacts": [{"file": "old_format_int8.tflite", "sha256": 7}]}', "is not a sha256"),
])
def test_unreadable_records_are_errors_in_bench_and_predict_unless_no_verify(
        models, images, tmp_path, no_timing, where, content, needle):
    target = models.parent / ("manifest.json" if where == "manifest" else models.name + ".json")
    target.write_text(content)
    out = tmp_path / "r.csv"
    _one_line_error(_bench(models.parent, "--no-eval", "--out", out), target.name, needle)
    assert not no_timing and not out.exists()
    if where == "manifest":  # a sidecar is also predict's metadata, read whatever --no-verify says
        _one_line_error(CliRunner().invoke(main, ["predict", str(models), str(images)]), target.name, needle)
        assert CliRunner().invoke(main, ["predict", str(models), str(images), "--no-verify"]).exit_code == 0
    res = _bench(models.parent, "--no-eval", "--out", out, "--no-verify")
    assert res.exit_code == 0, res.output
    assert no_timing == [models] and out.is_file()


def test_bench_verifies_every_file_before_timing_any(models, tmp_path, no_timing):
    changed = bytearray(models.read_bytes())
    changed[-40:] = bytes(40)  # weights changed, flatbuffer still readable
    models.write_bytes(bytes(changed))
    out = tmp_path / "r.csv"
    for extra in ([], ["--no-eval"]):  # with evaluation on, it used to refuse only after timing
        _one_line_error(_bench(models.parent, "--out", out, *extra), models.name, "sha256 differs", "--no-verify")
    assert not no_timing and not out.exists()
    assert _bench(models.parent, "--out", out, "--no-verify").exit_code == 0 and no_timing == [models]


def _special(tmp_path, kind) -> Path:
    if kind == "fifo":
        path = tmp_path / "x.tflite"
        os.mkfifo(path)
    else:
        path = tmp_path / "zero.tflite"
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("command", ["bench-file", "bench-folder", "profile", "predict", "inspect"])
def test_model_inputs_must_be_regular_files(tmp_path, images, no_timing, kind, command):
    folder = tmp_path / "models"
    folder.mkdir()
    path = _special(folder, kind)
    args = {"bench-file": ["bench", "run", str(path), "--out", str(tmp_path / "r.csv")],
            "bench-folder": ["bench", "run", str(folder), "--out", str(tmp_path / "r.csv")],
            "profile": ["profile", str(path)], "predict": ["predict", str(path), str(images)],
            "inspect": ["inspect", str(path)]}[command]
    with deadline(10):
        res = CliRunner().invoke(main, args)
    _one_line_error(res, path.name, "not a regular file")
    assert not no_timing


# --------------------------------------------------------------------------- benchmark log import
CPP = (FIXTURES / "benchmark_model_cpp.log").read_text().replace(
    "/data/local/tmp/mobilenet_v1_050__int8.tflite", f"/data/local/tmp/{MODEL.name}")
CPP_OK = CPP.replace("(MB): 0.872", f"(MB): {MODEL.stat().st_size / 1e6}")
PY = f"""2025-01-01 10:00:00,000 INFO benchmark_litert_model: Model:           /tmp/{MODEL.name}
2025-01-01 10:00:00,000 INFO benchmark_litert_model: Model size:      0.00 MB
2025-01-01 10:00:00,000 INFO benchmark_litert_model: Num threads:     2

========================================
 BENCHMARK RESULTS
========================================
Model initialization:  1.20 ms
Warmup (first):        0.30 ms
Warmup (avg):          0.25 ms (5 runs)
Inference (avg):       0.21 ms (50 runs)
Inference (min):       0.20 ms
Inference (max):       0.40 ms
Inference (median):    0.21 ms
Inference (std):       0.02 ms
"""
JSON = {"model": f"/tmp/{MODEL.name}", "model_size_mb": 0.0, "num_threads": 2,
        "latency": {"init_ms": 1.2, "warmup_first_ms": 0.3, "avg_ms": 0.21, "min_ms": 0.2, "max_ms": 0.4,
                    "median_ms": 0.21, "std_ms": 0.02, "num_runs": 50}}


def _json(**latency) -> str:
    return json.dumps({**JSON, "latency": {**JSON["latency"], **latency}}, indent=2)


@pytest.mark.parametrize("name, text, needles", [
    ("cpp_dots", CPP_OK.replace("Inference (avg): 2467.35", "Inference (avg): 1.2.3"), ["line 25", "'1.2.3'"]),
    ("cpp_ellipsis", CPP_OK.replace("Init: 11284", "Init: ..."), ["line 25", "'...'"]),
    ("cpp_zero", CPP_OK.replace("Inference (avg): 2467.35", "Inference (avg): 0").replace("median=2437", "median=0"),
     ["line 25", "> 0"]),
    ("cpp_median_nan", CPP_OK.replace("median=2437", "median=nan"), ["line 23", "'nan'"]),
    ("cpp_count_zero", CPP_OK.replace("count=405", "count=0"), ["line 23", "whole number >= 1"]),
    ("cpp_size", CPP.replace("(MB): 0.872", "(MB): 9.999"), ["line 17", "9.999 MB", "not the same file"]),
    ("py_dots", PY.replace("Inference (avg):       0.21", "Inference (avg):       1.2.3"), ["line 11", "'1.2.3'"]),
    ("py_zero_runs", PY.replace("(50 runs)", "(0 runs)"), ["line 11", "whole number >= 1"]),
    ("py_size", PY.replace("Model size:      0.00", "Model size:      9.99"), ["line 2", "not the same file"]),
    ("json_nan", _json(avg_ms=float("nan")), ["line 8", "latency.avg_ms", "'NaN'"]),
    ("json_minus_inf", _json(median_ms=float("-inf")), ["line 11", "'-Infinity'"]),
    ("json_negative_std", _json(std_ms=-1.5), ["line 12", "latency.std_ms"]),
    ("json_runs", _json(num_runs=-7), ["line 13", "latency.num_runs", "'-7'"]),
    ("json_string", _json(min_ms="fast"), ["line 9", "latency.min_ms"]),
    ("json_shape", '{"latency": [1]}', ["not a benchmark_litert_model --result_json"]),
    ("json_size", json.dumps({**JSON, "model_size_mb": 9.999}), ["not the same file"]),
])
def test_every_logged_figure_is_checked(models, tmp_path, name, text, needles):
    log = tmp_path / f"{name}.log"
    log.write_text(text)
    res = CliRunner().invoke(main, ["bench", "import", str(log), "--device", "phone", "--models", str(models.parent),
                                    "--no-eval", "--out", str(tmp_path / "d.csv")])
    _one_line_error(res, log.name, *needles)


@pytest.mark.parametrize("text", [CPP_OK, PY, json.dumps(JSON, indent=2)])
def test_good_logs_still_import(models, tmp_path, text):
    from gram_tf.bench.importer import import_logs

    log = tmp_path / "good.log"
    log.write_text(text)
    row, = import_logs([log], models.parent, "phone", evaluate=False)
    assert row["latency_ms_p50"] > 0 and row["runs"] >= 1 and row["size_bytes"] == MODEL.stat().st_size


# --------------------------------------------------------------------------- predict result files
def _predict(model, *args):
    return CliRunner().invoke(main, ["predict", str(model), *map(str, args)])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_with_another_model_is_refused_and_rows_name_their_model(tmp_path, images, suffix):
    out = tmp_path / f"rows{suffix}"
    assert _predict(MODEL, images / "a.png", "--out", out).exit_code == 0
    _one_line_error(_predict(OTHER_MODEL, images, "--out", out, "--resume"), out.name, "another model")
    assert _predict(MODEL, images, "--out", out, "--resume").exit_code == 0
    if suffix == ".csv":
        rows = list(csv.DictReader(out.open()))
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and {r["model_sha256"] for r in rows} == {_sha(MODEL)}


@pytest.mark.parametrize("damage, needle", [
    (lambda text: "hello, not ours\n", "line 1 is not a JSON row"),
    (lambda text: "[1, 2]\n", "row 1 lacks"),
    (lambda text: text.split("\n")[0][:30] + "\n" + text, "line 1 is not a JSON row"),  # a line cut mid-file
    (lambda text: "\udcff\n", "unreadable"),
])
def test_resume_of_a_damaged_json_lines_file(tmp_path, images, damage, needle):
    out = tmp_path / "rows.jsonl"
    assert _predict(MODEL, images / "a.png", "--out", out).exit_code == 0
    before = damage(out.read_text()).encode("utf-8", errors="surrogateescape")
    out.write_bytes(before)
    _one_line_error(_predict(MODEL, images, "--out", out, "--resume"), out.name, needle)
    assert out.read_bytes() == before  # a file that is not ours is left as it is


def test_paths_are_resolved_before_de_duplication(tmp_path, images):
    out = tmp_path / "x.csv"
    res = _predict(MODEL, images, images, f"{images}/../{images.name}", images / "a.png", "--out", out)
    assert res.exit_code == 0, res.output
    assert len(list(csv.DictReader(out.open()))) == 2


# ------------------------------------------------------------------------------ labels in metadata
@pytest.mark.parametrize("labels", [[1, None], ["", "x"], [" ", "x"], ["pos\nitive", "x"], "a,b", []])
def test_metadata_labels_must_be_names(tmp_path, images, labels):
    model = tmp_path / "labels.tflite"
    model.write_bytes(embed_metadata(MODEL.read_bytes(), {**read_metadata(MODEL), "labels": labels}))
    _one_line_error(_predict(model, images), model.name, "--labels")
    res = _predict(model, images, "--labels", "gram_negative,gram_positive")
    assert res.exit_code == 0 and "gram_" in res.output
