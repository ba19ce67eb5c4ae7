"""The benchmark scripts: their own logic (the sweep table, the int8 weight simulation), a smoke run of every
tool in benchmarks/ and tools/ at its smallest size, and an import check of the experiments."""
from __future__ import annotations

import ast
import contextlib
import csv
import importlib.util
import io
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import deadline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _row(variant, ms, acc, partitions=1, choice=""):
    return {"runtime": "litert", "threads": "2", "variant": variant, "latency_ms_p50": str(ms),
            "accuracy": str(acc), "macs": "300000000", "n_test": "96", "partitions": str(partitions),
            "fast_choice": choice}


def test_sweep_table_ratios_and_within_1pp():
    from sweep_table import table

    rows = {
        # int8 faster but loses 2 images; int8-fast slower than fp32 but accurate
        "a": {"fp32": _row("fp32", 10.0, 0.80), "int8": _row("int8", 8.0, 0.78, 1),
              "int8-fast": _row("int8-fast", 12.5, 0.80, 2, "delegate-only (3 float)")},
        "b": {"fp32": _row("fp32", 10.0, 0.80), "int8": _row("int8", 20.0, 0.50, 19),
              "int8-fast": _row("int8-fast", 9.0, 0.60, 2, "accuracy-guarded (64 float)")},
    }
    lines, ratios = table(rows)
    assert ratios["a"]["int8-fast"] == 0.8 and ratios["a"]["best_within_1pp"] == 0.8
    assert ratios["b"]["best_within_1pp"] is None and abs(ratios["b"]["int8-fast"] - 10 / 9) < 1e-9
    line_a = next(ln for ln in lines if ln.startswith("| a |"))
    assert "8.0 (-2.0)" in line_a and "1.25x / 0.80x" in line_a and "0.80x (int8-fast)" in line_a
    assert "none within 1 pp" in next(ln for ln in lines if ln.startswith("| b |"))


def test_int8_weight_simulation_rounds_per_channel_and_restores():
    import tf_keras

    from int8_accuracy import int8_weight_probs

    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same")(inp)
    x = tf_keras.layers.Conv2D(4, 1)(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(2, activation="softmax")(x))
    conv = model.layers[2]
    # one output channel 1000x larger than the others: per-tensor rounding would zero the rest
    k = conv.kernel.numpy()
    k[..., 0] *= 1000.0
    conv.kernel.assign(k)
    before = [w.copy() for w in model.get_weights()]
    images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3)).astype(np.uint8)
    from gram_tf.runtime import DEFAULT_PREPROCESSING

    pre = dict(DEFAULT_PREPROCESSING)

    seen = {}
    original = tf_keras.Model.predict

    def spy(self, *a, **kw):  # look at the kernel while the rounded weights are in place
        seen["kernel"] = conv.kernel.numpy().copy()
        return original(self, *a, **kw)

    tf_keras.Model.predict = spy
    try:
        probs = int8_weight_probs(model, images, pre)
    finally:
        tf_keras.Model.predict = original
    assert probs.shape == (4, 2)
    rounded = seen["kernel"]
    scale = np.abs(k).max(axis=(0, 1, 2)) / 127.0
    steps = rounded / scale
    assert np.allclose(steps, np.round(steps), atol=1e-3)  # on each channel's own int8 grid
    assert np.count_nonzero(rounded[..., 1:]) > 0  # small channels not flushed to zero
    for w0, w1 in zip(before, model.get_weights()):
        assert np.array_equal(w0, w1)


def test_activation_ranges_flags_per_image_scale_drift():
    import tf_keras

    from gram_tf.runtime import DEFAULT_PREPROCESSING
    from int8_accuracy import activation_ranges

    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Conv2D(4, 1, use_bias=False)(inp)
    model = tf_keras.Model(inp, tf_keras.layers.BatchNormalization()(x))
    pre = dict(DEFAULT_PREPROCESSING)
    rng = np.random.default_rng(0)
    steady = rng.integers(100, 156, (8, 8, 8, 3)).astype(np.uint8)  # every image spans the same range
    drifting = steady.copy()
    drifting[0] = np.where(rng.random((8, 8, 3)) < 0.5, 0, 255)  # one image with a 9x wider range

    calm, wild = activation_ranges(model, steady, pre), activation_ranges(model, drifting, pre)
    assert calm["tensors"] == wild["tensors"] == 1  # the conv output is left out (BN folds into it)
    assert calm["median_calib_over_image_range"] < 2 < 4 < wild["median_calib_over_image_range"]
    assert wild["median_int8_steps_per_std"] < calm["median_int8_steps_per_std"] / 3


# the scripts' own modules, imported by name once a script puts its folder on sys.path
SCRIPT_MODULES = {p.stem for folder in ("benchmarks", "tools") for p in (ROOT / folder).glob("*.py")}


def run_script(script: str, *args, results: Path, in_process: bool = True, timeout: int = 300) -> str:
    """`python SCRIPT ARGS` from the repository root with GRAM_TF_RESULTS_DIR=results; its stdout.

    In this process by default (one TensorFlow import for all the smoke runs, not one each): the script
    runs as __main__ and its own modules (common, bench_int8, ...) are imported afresh, so common.RESULTS
    reads the variable; the modules, sys.path, sys.argv and the environment are restored afterwards."""
    path = ROOT / script
    env = {"GRAM_TF_RESULTS_DIR": str(results)}
    if not in_process:
        done = subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env={**os.environ, **env})
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout
    out = io.StringIO()
    saved = {name: sys.modules.pop(name) for name in SCRIPT_MODULES if name in sys.modules}
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), deadline(timeout):
            mp.chdir(ROOT)
            mp.setenv("GRAM_TF_RESULTS_DIR", env["GRAM_TF_RESULTS_DIR"])
            mp.setattr(sys, "argv", [str(path), *map(str, args)])
            mp.setattr(sys, "path", list(sys.path))
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as stop:
                assert stop.code in (None, 0), f"{script} stopped: {stop.code}"
    finally:
        for name in SCRIPT_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return out.getvalue()


def read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def int8_results(tmp_path_factory) -> Path:
    """bench_int8.py end to end at the smallest size (its results feed sweep_table.py's smoke run too), in its
    own process: ONNX Runtime and tf2onnx stay out of the test process."""
    out = tmp_path_factory.mktemp("int8_results")
    stdout = run_script("benchmarks/bench_int8.py", "--backbones", "mobilenet_v1_025", "--variants", "fp32,int8",
                        "--threads", "1", "--target-threads", "1", "--size", "32", "--train", "8", "--test", "8",
                        "--val", "8", "--runs", "2", "--rounds", "1", "--warmup", "1", "--fast-runs", "1",
                        "--calibration", "4", "--name", "smoke", results=out, in_process=False)
    (out / "stdout.txt").write_text(stdout)
    return out


def smoke_bench_int8(tmp_path, request):
    """ONNX Runtime included: its import broke once behind a broad except that printed 'peers skipped'."""
    out = request.getfixturevalue("int8_results")
    assert "peers skipped" not in (out / "stdout.txt").read_text()
    assert {r["runtime"] for r in read_csv(out / "smoke.csv")} >= {"litert", "onnxruntime"}


def smoke_sweep_table(tmp_path, request):
    out = request.getfixturevalue("int8_results")
    stdout = run_script("benchmarks/sweep_table.py", "smoke", "--threads", "1", results=out)
    assert "| mobilenet_v1_025 |" in stdout and "1 backbones; no int8-fast rows" in stdout


def smoke_bench_variants(tmp_path, request):
    run_script("benchmarks/bench_variants.py", "--backbones", "mobilenet_v1_025", "--variants", "fp32,int8",
               "--threads", "1", "--size", "32", "--runs", "2", "--warmup", "1", "--calibration", "2",
               "--name", "smoke", results=tmp_path)
    rows = read_csv(tmp_path / "smoke.csv")
    assert [r["variant"] for r in rows] == ["fp32", "int8"] and all(float(r["latency_ms_p50"]) > 0 for r in rows)
    assert (tmp_path / "smoke.env.json").is_file()


def smoke_int8_accuracy(tmp_path, request):
    run_script("benchmarks/int8_accuracy.py", "--backbones", "mobilenet_v1_025", "--size", "32", "--train", "8",
               "--test", "8", "--calibration", "4", "--more-calibration", "4", "--baselines", "fp32,int8",
               "--techniques", "bc", "--name", "smoke", results=tmp_path)
    variants = [r["variant"] for r in read_csv(tmp_path / "smoke.csv")]
    assert variants == ["keras fp32", "weights-int8 (sim)", "fp32", "int8", "int8-cal4", "int8 + bc"]
    assert read_csv(tmp_path / "smoke.ranges.csv")[0]["backbone"] == "mobilenet_v1_025"


def smoke_bench_predict(tmp_path, request):
    run_script("benchmarks/bench_predict.py", "--tiles", "4", "--tile-size", "48", "--size", "32", "--rounds", "1",
               "--threads", "1", "--workers", "1", "--no-real", "--large-jpegs", "2", "--kill-images", "40",
               "--memory", "20", "--name", "smoke", results=tmp_path)
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert result["images"] == 4 and "end-to-end int8 b8" in result["throughput"]
    assert result["kill_and_resume"]["exactly_one_row_per_image"]
    assert result["memory"][0]["rows"] == 20
    assert result["draft_agreement"]["synthetic_1800x1350_jpeg"]["images"] == 2


def smoke_check_official(tmp_path, request):
    run_script("benchmarks/check_official.py", "--size", "32", "--threads", "1", "--runs", "2", "--warmup", "1",
               "--rounds", "1", "--name", "smoke", results=tmp_path)
    rows = json.loads((tmp_path / "smoke.json").read_text())
    assert [r["file"] for r in rows] == ["mnv2_035__fp32__b1.tflite", "mnv2_035__int8__b1.tflite"]
    assert all(r["official_ms_mean"] > 0 and r["ours_ms_mean"] > 0 for r in rows)


def smoke_pixel_input(tmp_path, request):
    run = request.getfixturevalue("tiny_run")
    run_script("benchmarks/pixel_input.py", "--quickstart", run, "--no-real", "--variants", "fp32,int8",
               "--threads", "1", "--rounds", "1", "--runs", "2", "--work", tmp_path / "work", "--out", "smoke",
               results=tmp_path)
    rows = read_csv(tmp_path / "smoke.csv")
    assert {(r["variant"], r["input"]) for r in rows} == {(v, m) for v in ("fp32", "int8")
                                                         for m in ("normalized", "pixels")}
    assert {r["io_type"] for r in rows if r["variant"] == "int8"} == {"int8", "uint8"}  # normalized, pixels


def smoke_real_micrographs(tmp_path, request):
    """Photos laid out as ../shared/data/real, tiny: 2 GramStainR classes x 4 photos, 2 Mendeley classes x 1."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for group, classes, photos, (w, h) in [("gramstainr_reference", ("Escherichia_coli", "Pseudomonas_aeruginosa"),
                                            4, (128, 72)), ("mendeley_examples", ("cocci", "rods"), 1, (90, 90))]:
        stem = "slide" if group.startswith("gram") else "culture"
        for k, cls in enumerate(classes):
            (tmp_path / "real" / group / cls).mkdir(parents=True)
            for i in range(photos):
                pixels = rng.integers(0, 255, (h, w, 4), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "real" / group / cls / f"{stem}{k}_{i}.png")
    run_script("benchmarks/real_micrographs.py", tmp_path / "set", "--source", tmp_path / "real", results=tmp_path)
    rows = read_csv(tmp_path / "set" / "manifest.csv")
    assert len(rows) == 2 * 4 * 8 + 2 * 9  # 8 fields per GramStainR photo, 9 per Mendeley photo
    splits = {}
    for r in rows:
        splits.setdefault(r["group"], set()).add(r["split"])
        assert Image.open(tmp_path / "set" / r["path"]).size == (256, 256)
    slides = {g: s for g, s in splits.items() if g.startswith("slide")}
    assert len(slides) == 8 and all(len(s) == 1 for s in slides.values()), splits  # a photo's fields in one split


def smoke_generalization_real(tmp_path, request):
    """Photos laid out as ../shared/data/real (2 classes x 6), random weights at 32 px, no pruned level."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, cls in enumerate(("Escherichia_coli", "Pseudomonas_aeruginosa")):
        (tmp_path / "real" / "gramstainr_reference" / cls).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, (72, 128, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "real" / "gramstainr_reference" / cls / f"photo{k}{i:02d}.png")
    run_script("benchmarks/generalization_real.py", "--source", tmp_path / "real", "--work", tmp_path / "work",
               "--weights", "none", "--size", "32", "--epochs", "1", "--prune", "0", "--calibration", "4",
               "--variants", "fp32,int8", "--rounds", "1", "--runs", "1", "--name", "smoke", results=tmp_path)
    rows = read_csv(tmp_path / "smoke.csv")
    sets = {"other_photos", "other_photos_faded", "other_photos_defocus"}
    assert {(r["set"], r["variant"]) for r in rows} == {(s, v) for s in sets for v in ("int8", "keras")}
    assert all(r["n_external"] == "48" and float(r["drop_ext_low"]) <= float(r["drop_ext_high"]) for r in rows)  # 3 photos x 8
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert saved["environment"]["command"] and saved["environment"]["date"] and saved["environment"]["cpu"]
    assert {r["dataset"] for r in saved["study_rows"]} == sets | {"test"}


def smoke_make_docs_figures(tmp_path, request):
    from PIL import Image

    from gram_tf.data.synth import STYLES

    run_script("benchmarks/make_docs_figures.py", "--out", tmp_path, "--results", ROOT / "benchmarks" / "results",
               results=tmp_path)
    assert Image.open(tmp_path / "synth_examples.png").size == (6 * 160, 2 * 160)
    # the real-weights generalization run's calibration plots, drawn from its saved study rows
    assert all(Image.open(tmp_path / f"generalization_{p}.png").size[0] > 400 for p in ("reliability", "coverage"))
    assert Image.open(tmp_path / "synth_styles.png").size == (6 * 128, len(STYLES) * 128)  # a row per style


def smoke_backbone_catalogue(tmp_path, request):
    """One backbone written elsewhere: the same data the registry records for it."""
    from gram_tf.models.sizes import SIZES
    from gram_tf.optimize.support_data import SUPPORT

    run_script("tools/backbone_catalogue.py", "--backbones", "mobilenet_v1_025", "--out", tmp_path, results=tmp_path)
    written = {}
    for rel in ("gram_tf/models/sizes.py", "gram_tf/optimize/support_data.py"):
        exec(compile((tmp_path / rel).read_text(), rel, "exec"), written)
    assert written["SIZES"] == {"mobilenet_v1_025": SIZES["mobilenet_v1_025"]}
    assert written["SUPPORT"] == {"mobilenet_v1_025": SUPPORT["mobilenet_v1_025"]}


def smoke_bench_trust(tmp_path, request):
    """Both methods, quiet and beside a burner, with evaluation: the rows compare each speed-up with the truth."""
    from gram_tf.config import ConvertConfig
    from gram_tf.convert import convert_run

    models = tmp_path / "models"
    convert_run(request.getfixturevalue("tiny_run"), ["fp32", "int8"], out_dir=models,
                cfg=ConvertConfig(representative_samples=8, check_samples=4), progress=False)
    stdout = run_script("benchmarks/bench_trust.py", "--set", f"tiny={models}", "--threads", "1", "--truth-rounds", "2",
                        "--truth-runs", "2", "--eval", "--conditions", "quiet", "--out", "smoke", results=tmp_path)
    rows = read_csv(tmp_path / "smoke.csv")
    # (a burner beside the smoke run would slow the other test worker; the real run has both conditions)
    assert {(r["condition"], r["method"]) for r in rows} == {("quiet", "before"), ("quiet", "after")}
    assert all(r["file"].endswith("__int8.tflite") and float(r["truth_speedup"]) > 0 for r in rows)
    after = [r for r in rows if r["method"] == "after"]
    assert all(float(r["speedup_ci_low"]) <= float(r["bench_speedup"]) <= float(r["speedup_ci_high"]) for r in after)
    summary = read_csv(tmp_path / "smoke.summary.csv")
    assert summary[0]["method"] == "truth (first vs last)" and all(r["auto"] for r in summary[1:])
    env = json.loads((tmp_path / "smoke.json").read_text())["environment"]
    assert env["before"] == "current code, --rounds 1" and env["fresh_worker_s"] > 0 and "fresh worker" in stdout


def smoke_quickstart(tmp_path, request):
    """A whole study at the smallest size: its rows and its wall time land in the results folder."""
    config = tmp_path / "tiny.yaml"
    config.write_text(f"name: tiny\ntflite_dir: {tmp_path / 'tfl'}\nbackbones: [mobilenet_v1_025]\n"
                      "data: {synth_per_class: 12, synth_size: 32}\n"
                      "train: {input_size: 32, weights: none, epochs: 1, tensorboard: false}\nprune: {levels: []}\n"
                      "convert: {variants: [fp32], representative_samples: 4, check_samples: 2}\n"
                      "bench: {threads: [1], rounds: 2, runs: 2, warmup: 1, keras_reference: false}\n")
    run_script("benchmarks/quickstart.py", "--config", config, results=tmp_path)
    saved = json.loads((tmp_path / "quickstart.json").read_text())
    assert [r["variant"] for r in saved["rows"]] == ["fp32"] and saved["environment"]["wall_s"] > 0
    assert read_csv(tmp_path / "quickstart.csv")[0]["rounds"] == "2"


def smoke_ray_cluster(tmp_path, request):
    """A one-CPU Ray node and a one-stage-per-kind study: both executors' wall times and the critical path."""
    from .test_pipeline_ray import ray_or_skip

    ray_or_skip()
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\nbackbones: [mobilenet_v1_025]\ndata: {synth_per_class: 12, synth_size: 32}\n"
                      "train: {input_size: 32, weights: none, epochs: 1, tensorboard: false}\nprune: {levels: []}\n"
                      "convert: {variants: [fp32], representative_samples: 4, check_samples: 2}\n"
                      "bench: {threads: [1], rounds: 1, runs: 1, warmup: 1, keras_reference: false}\n")
    stdout = run_script("benchmarks/ray_cluster.py", "--config", config, "--nodes", "1", "--name", "smoke",
                        results=tmp_path)
    saved = json.loads((tmp_path / "smoke.json").read_text())
    studies = {r["executor"]: r for r in saved["rows"] if r["kind"] == "study"}
    assert set(studies) == {"local", "ray"} and all(r["seconds"] > 0 for r in studies.values())
    stages = {(r["executor"], r["stage"]): r for r in saved["rows"] if r["kind"] == "stage"}
    assert {s for _, s in stages} == {"data", "train-mobilenet_v1_025", "convert-mobilenet_v1_025-dense",
                                      "bench-mobilenet_v1_025"}
    # a Ray stage names its node (host/node id), a local one the host
    assert stages["ray", "data"]["node"].startswith(stages["local", "data"]["node"] + "/")
    env = saved["environment"]
    # one backbone, no pruning: the DAG is a chain, so the critical path is all the work
    assert abs(env["critical_path_s"] - env["total_work_s"]) <= 0.1 and env["max_speedup"] == 1.0
    assert env["critical_path"] == "data -> train-mobilenet_v1_025 -> convert-mobilenet_v1_025-dense -> " \
                                   "bench-mobilenet_v1_025" and "critical path" in stdout


def smoke_ci_timing(tmp_path, request):
    out = tmp_path / "ci.json"
    run_script("tools/ci_timing.py", out, "--wall-s", "557.1", "--summary", "= 619 passed, 2 skipped in 557.10s =",
               results=tmp_path)
    row = json.loads(out.read_text())["rows"][0]
    assert (row["wall_s"], row["passed"], row["skipped"], row["failed"]) == (557, 619, 2, 0)


def smoke_docs_tables(tmp_path, request):
    """--check on the repository (tests/test_docs_tables.py covers the rewriting)."""
    run_script("tools/docs_tables.py", "--check", results=tmp_path)


# every Python script in benchmarks/ and tools/ (not benchmarks/experiments/) -> its smoke run
SMOKES = {
    "benchmarks/bench_int8.py": smoke_bench_int8,
    "benchmarks/bench_trust.py": smoke_bench_trust,
    "benchmarks/quickstart.py": smoke_quickstart,
    "benchmarks/ray_cluster.py": smoke_ray_cluster,
    "tools/ci_timing.py": smoke_ci_timing,
    "tools/docs_tables.py": smoke_docs_tables,
    "benchmarks/sweep_table.py": smoke_sweep_table,
    "benchmarks/bench_variants.py": smoke_bench_variants,
    "benchmarks/int8_accuracy.py": smoke_int8_accuracy,
    "benchmarks/bench_predict.py": smoke_bench_predict,
    "benchmarks/check_official.py": smoke_check_official,
    "benchmarks/pixel_input.py": smoke_pixel_input,
    "benchmarks/real_micrographs.py": smoke_real_micrographs,
    "benchmarks/generalization_real.py": smoke_generalization_real,
    "benchmarks/make_docs_figures.py": smoke_make_docs_figures,
    "tools/backbone_catalogue.py": smoke_backbone_catalogue,
}
# modules the scripts import, with no command line of their own (their smoke runs are the scripts')
HELPERS = {"benchmarks/common.py"}


@pytest.mark.parametrize("script", sorted(SMOKES))
def test_script_smoke_run(script, tmp_path, request):
    SMOKES[script](tmp_path, request)


def test_every_script_has_a_smoke_run():
    found = {p.relative_to(ROOT).as_posix() for folder in ("benchmarks", "tools") for p in (ROOT / folder).glob("*.py")}
    assert found == set(SMOKES) | HELPERS, "add a smoke run to SMOKES in tests/test_bench_scripts.py"
    for helper in HELPERS:
        assert "__main__" not in (ROOT / helper).read_text(), f"{helper} has a command line: give it a smoke run"


EXPERIMENTS = sorted((ROOT / "benchmarks" / "experiments").glob("*.py"))


def gram_tf_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from gram_tf... import name` in the file, function-level ones too."""
    return [(node.module, alias.name) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "gram_tf"
            for alias in node.names]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_imports_resolve(path):
    """An experiment is not run here (it needs ../shared), but what it imports must exist: its top level
    (the benchmarks/ tools, the experiments beside it) through `--help`, and every gram_tf name it imports."""
    done = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
    missing = []
    for module, name in gram_tf_imports(path):
        mod = importlib.import_module(module)
        submodule = hasattr(mod, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None
        if not hasattr(mod, name) and not submodule:
            missing.append(f"from {module} import {name}")
    assert not missing, f"{path.name}: {missing}"
