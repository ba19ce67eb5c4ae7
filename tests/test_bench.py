"""Benchmark rows, evaluation on the test split, and LiteRT-only predictions that match them."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from gram_tf.bench import bench_paths
from gram_tf.report import ROW_COLUMNS, write_results
from gram_tf.cli import main
from gram_tf.config import ConvertConfig
from gram_tf.convert import convert_run
from gram_tf.errors import GramTFError


@pytest.fixture(scope="module")
def artifacts(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_tfl")
    convert_run(tiny_run, ["fp32", "int8"], out_dir=out,
                cfg=ConvertConfig(representative_samples=24, check_samples=8), progress=False)
    return out


@pytest.fixture(scope="module")
def rows(artifacts):
    return bench_paths([artifacts], threads=[1, 2], rounds=3, runs=4, warmup=1, progress=False)


def test_rows_have_every_column_with_sane_values(rows, synth_manifest):
    from gram_tf.data import read_manifest

    n_test = sum(r["split"] == "test" for r in read_manifest(synth_manifest))
    assert len(rows) == 2 * 2 + 2  # (fp32, int8) x 2 threads + Keras reference x 2 threads
    by = {(r["variant"], r["threads"]): r for r in rows}
    for r in rows:
        assert list(r) == ROW_COLUMNS
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p90"] <= r["latency_ms_p99"] * 1.0001
        assert r["images_per_s"] == pytest.approx(1000.0 / r["latency_ms_p50"], rel=1e-6)
        assert 0 <= r["accuracy"] <= 1 and r["n_test"] == n_test and len(r["correct"]) == n_test
        assert 0 < r["loss"] and 0 <= r["auc"] <= 1 and 0 <= r["f1_macro"] <= 1
        # calibration before and after the run's temperature (the same T for the Keras reference)
        assert 0 <= r["ece"] <= 1 and 0 <= r["ece_adaptive"] <= 1 and 0 <= r["brier"] <= 2
        assert r["temperature"] == by[("fp32", 1)]["temperature"] > 0
        assert 0 <= r["ece_ts"] <= 1 and 0 <= r["brier_ts"] <= 2 and r["nll_ts"] > 0
        scores = [float(v) for v in r["confidence"].split(";")]
        assert len(scores) == n_test and min(scores) >= 0.5 - 1e-4  # two classes: the top score is >= 0.5
        assert len(r["confidence_ts"].split(";")) == n_test
        assert 5 < r["peak_rss_mb"] < 4000 and r["init_ms"] > 0 and r["first_ms"] > 0
        assert r["runs"] == 12 and r["rounds"] == 3 and r["macs"] > 0 and r["gmacs_per_s"] > 0
        rounds = [float(v) for v in r["round_ms"].split(";")]
        assert len(rounds) == 3 and r["latency_ms_p50"] == pytest.approx(float(np.median(rounds)), rel=1e-5)
        assert r["latency_ms_ci_low"] == pytest.approx(min(rounds), rel=1e-5)  # 3 rounds: [min, max]
        assert r["latency_ms_ci_high"] == pytest.approx(max(rounds), rel=1e-5)
        q75, q25 = np.percentile(rounds, [75, 25])
        spread = 100 * (q75 - q25) / float(np.median(rounds))  # round-to-round (interquartile), in percent
        assert r["spread_pct"] == pytest.approx(spread, rel=1e-4, abs=1e-3) and r["noise_pct"] == by[("fp32", r["threads"])]["spread_pct"]
    for t in (1, 2):
        assert by[("fp32", t)]["speedup_vs_fp32"] == 1.0 and by[("fp32", t)]["size_ratio_vs_fp32"] == 1.0
        assert by[("fp32", t)]["speedup_ci_low"] == by[("fp32", t)]["speedup_ci_high"] == 1.0  # paired with itself
        ratio = [a / b for a, b in zip(*(map(float, by[(v, t)]["round_ms"].split(";")) for v in ("fp32", "int8")))]
        assert by[("int8", t)]["speedup_vs_fp32"] == pytest.approx(float(np.median(ratio)), rel=1e-5)
        assert by[("int8", t)]["size_ratio_vs_fp32"] < 0.5
        assert by[("keras", t)]["runtime"] == "keras"
    # the Keras float model and its fp32 .tflite make the same calls on the test images
    assert by[("keras", 1)]["correct"] == by[("fp32", 1)]["correct"]
    # int8 and fp32 artifacts of one model agree on most test images
    a, b = by[("int8", 1)]["correct"], by[("fp32", 1)]["correct"]
    assert np.mean([x == y for x, y in zip(a, b)]) >= 0.7


def test_results_files_round_trip(rows, tmp_path):
    from gram_tf.report import load_results

    csv_path, json_path = write_results(rows, tmp_path / "results.csv")
    assert csv_path.read_text().splitlines()[0].split(",") == ROW_COLUMNS
    back = load_results([csv_path])
    assert [r["correct"] for r in back] == [r["correct"] for r in rows]
    assert json.loads(json_path.read_text())[0]["backbone"] == "mobilenet_v1_050"


def test_litert_only_predictions_match_bench_evaluation(rows, artifacts, synth_manifest, tmp_path):
    """`gram-tf predict`'s runtime, with TensorFlow unimportable, makes bench's calls."""
    from gram_tf.data import read_manifest

    test_rows = [r for r in read_manifest(synth_manifest) if r["split"] == "test"]
    blocker = tmp_path / "block"
    for name in ("tensorflow", "tf_keras", "keras"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text("raise ImportError('blocked for this test')\n")
    for variant in ("fp32", "int8"):
        model = artifacts / f"mobilenet_v1_050__{variant}.tflite"
        code = textwrap.dedent(f"""
            import json, sys
            from gram_tf.runtime import Classifier
            clf = Classifier({str(model)!r}, threads=1)
            results, errors = clf.predict_paths({[r["path"] for r in test_rows]!r})
            assert not errors, errors
            print(json.dumps([r["label"] for r in results]))
            print(any(m in sys.modules for m in ("tensorflow", "tf_keras")))
        """)
        env = {"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        labels_line, tf_line = out.stdout.strip().splitlines()[-2:]
        predicted = json.loads(labels_line)
        assert tf_line == "False"
        by_path = dict(zip(sorted(r["path"] for r in test_rows), predicted))
        correct = "".join("1" if by_path[r["path"]] == r["label"] else "0" for r in test_rows)
        bench_row = next(r for r in rows if r["variant"] == variant and r["threads"] == 1)
        assert correct == bench_row["correct"], variant
    # the console command itself, on the deploy install (no TensorFlow), with a folder and a bad file
    (tmp_path / "imgs").mkdir()
    import shutil

    shutil.copy(test_rows[0]["path"], tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not an image")
    out = subprocess.run([sys.executable, "-m", "gram_tf.cli", "predict", str(artifacts / "mobilenet_v1_050__int8.tflite"),
                          str(tmp_path / "imgs"), "--json", "--top-k", "2"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    payload = json.loads(out.stdout)
    assert [r["path"].endswith("a.png") for r in payload["results"]] == [True]
    assert len(payload["results"][0]["top_k"]) == 2 and payload["errors"][0]["path"].endswith("broken.png")


def test_bad_paths_and_non_models_are_one_line(tmp_path):
    with pytest.raises(GramTFError, match="does not exist"):
        bench_paths([tmp_path / "missing"], progress=False)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(GramTFError, match="not a TFLite model"):
        bench_paths([junk], progress=False)
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "empty")])
    assert r.exit_code == 2 and r.output.strip().startswith("error: ") and "no .tflite" in r.output


def test_bench_cli_warns_in_one_line_when_the_machine_is_noisy(artifacts, tmp_path):
    fp32 = str(next(artifacts.glob("*fp32.tflite")))
    args = ["bench", fp32, "--threads", "1", "--rounds", "3", "--runs", "3", "--warmup", "1", "--no-eval", "--no-keras"]
    strict = CliRunner().invoke(main, [*args, "--max-noise", "1e-9", "--out", str(tmp_path / "a.csv")])
    assert strict.exit_code == 0, strict.output
    warning = [line for line in strict.output.splitlines() if line.startswith("warning: timing noise")]
    assert len(warning) == 1 and "re-run on a quiet machine or with more rounds" in warning[0]
    # beside the other test worker the machine is busy too: both limits lax
    lax = CliRunner().invoke(main, [*args, "--max-noise", "1000", "--max-busy-cores", "1000", "--out",
                                    str(tmp_path / "b.csv")])
    assert lax.exit_code == 0 and "warning" not in lax.output


def test_a_worker_that_dies_mid_round_is_a_one_line_error(artifacts, monkeypatch):
    from gram_tf.bench import litert

    visit = litert.WarmWorker.visit

    def dying(self, runs, max_seconds=None):
        self._proc.kill()  # what the OOM killer does to a worker
        self._proc.wait()
        return visit(self, runs, max_seconds)

    monkeypatch.setattr(litert.WarmWorker, "visit", dying)
    with pytest.raises(GramTFError, match=r"benchmarking .*fp32.tflite with 1 thread\(s\) failed"):
        bench_paths([next(artifacts.glob("*fp32.tflite"))], threads=[1], rounds=2, runs=2, warmup=0,
                    evaluate=False, keras_reference=False, progress=False)


# ------------------------------------------------------------------ devices and official tools
FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


def test_rows_name_their_device(rows):
    import os
    import socket

    for r in rows:
        assert r["device"] == r["cpu"] and r["cores"] == os.cpu_count() and r["os"] and r["arch"]
        assert r["runtime_version"].startswith("ai-edge-litert") and r["timing_source"].startswith("gram_tf")
        assert r["accuracy_source"] == "this machine"
        host = socket.gethostname()
        assert all(host not in str(r[c]) for c in ("device", "cpu", "isa", "os", "arch", "runtime_version"))
    labelled = bench_paths([rows[0]["path"]], threads=[1], rounds=2, runs=2, warmup=0, evaluate=False, keras_reference=False, progress=False,
                           device="lab server")
    assert labelled[0]["device"] == "lab server" and labelled[0]["cpu"] == rows[0]["cpu"]


def test_cpp_benchmark_model_log_fixture():
    from gram_tf.bench.logs import parse_log

    got = parse_log(FIXTURES / "benchmark_model_cpp.log")
    assert got["tool"] == "benchmark_model (C++)" and got["threads"] == 4
    assert got["model"] == "/data/local/tmp/mobilenet_v1_050__int8.tflite"
    assert got["latency_ms_mean"] == pytest.approx(2.46735) and got["latency_ms_p50"] == pytest.approx(2.437)
    assert got["runs"] == 405 and got["init_ms"] == pytest.approx(11.284) and got["first_ms"] == pytest.approx(4.511)


def _official(path, threads, out_dir, json_out=False):
    """Run LiteRT's official Python benchmark tool; returns the log (stdout + stderr) or the JSON path."""
    name = f"{path.stem}.t{threads}" + (".json" if json_out else ".log")
    target = out_dir / name
    cmd = [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", f"--model={path}",
           f"--num_threads={threads}", "--num_runs=8", "--warmup_runs=1"]
    if json_out:
        cmd.append(f"--result_json={target}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-800:]
    if not json_out:
        target.write_text(proc.stderr + proc.stdout)
    return target


def test_official_logs_import_as_devices_and_report_side_by_side(artifacts, rows, tmp_path):
    from gram_tf.bench.importer import import_logs
    from gram_tf.bench.logs import parse_log
    from gram_tf.report import build_report

    files = sorted(artifacts.glob("*.tflite"))
    logs = [_official(f, 1, tmp_path) for f in files]            # text logs, "phone"
    jsons = [_official(f, 2, tmp_path, json_out=True) for f in files]  # --result_json, "board"
    parsed = parse_log(logs[0])
    assert parsed["threads"] == 1 and parsed["model"].endswith(files[0].name) and parsed["runs"] == 8
    assert parse_log(jsons[0])["threads"] == 2
    phone = import_logs(logs, artifacts, "phone")
    board = import_logs(jsons, artifacts, "board")
    local = {(r["variant"], r["threads"]): r for r in rows}
    for r in phone + board:
        assert list(r) == ROW_COLUMNS and r["device"] in ("phone", "board")
        assert r["accuracy"] == local[(r["variant"], 1)]["accuracy"]  # same file, evaluated here
        assert r["accuracy_source"].startswith("local evaluation") and "benchmark_litert_model" in r["timing_source"]
        assert r["latency_ms_p50"] > 0 and r["size_bytes"] == local[(r["variant"], 1)]["size_bytes"]
    assert {r["variant"]: r["speedup_vs_fp32"] for r in phone}["fp32"] == 1.0
    report = build_report(rows + phone + board, tmp_path / "report")["report"].read_text()
    section = report.split("## 7. Devices", 1)[1]
    assert "phone ms" in section and "board x fp32" in section and "auto per device" in section
    # logs named after their artifact work without a model path in them
    stdout_only = tmp_path / f"{files[0].stem}.stdout.log"
    stdout_only.write_text("\n".join(line for line in logs[0].read_text().splitlines()
                                     if "benchmark_litert_model:" not in line))
    assert import_logs([stdout_only], artifacts, "phone", threads=4)[0]["threads"] == 4


def test_bad_logs_are_one_line_errors(artifacts, tmp_path):
    from gram_tf.bench.importer import import_logs

    bad = tmp_path / "bad.log"
    bad.write_text("INFO: STARTING!\nINFO: Graph: [x.tflite]\n")
    res = CliRunner().invoke(main, ["bench", "import", str(bad), "--device", "phone", "--models", str(artifacts)])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "bad.log" in res.output and "Inference timings in us" in res.output
    cut = tmp_path / "cut.log"
    cut.write_text("BENCHMARK RESULTS\nModel initialization:  5.90 ms\n")
    with pytest.raises(GramTFError, match="Inference \\(avg\\)"):
        import_logs([cut], artifacts, "phone", threads=1)
    other = tmp_path / "other.log"
    other.write_text((FIXTURES / "benchmark_model_cpp.log").read_text().replace("mobilenet_v1_050", "resnet50"))
    with pytest.raises(GramTFError, match="not in the models folder"):
        import_logs([other], artifacts, "phone")


def test_check_official_reports_the_ratio(artifacts):
    from gram_tf.bench.official import check_official

    [fp32] = sorted(artifacts.glob("*fp32.tflite"))
    [got] = check_official([fp32], threads=(1,), runs=5, warmup=1, rounds=1)
    assert (got["file"], got["threads"], got["rounds"]) == (fp32.name, 1, 1)
    assert got["ours_ms_mean"] > 0 and got["official_ms_mean"] > 0  # both tools really timed the file
    # the ratio is official / ours (not a speed claim: how close the two are is measured in benchmarks/)
    assert got["official_over_ours"] == pytest.approx(got["official_ms_mean"] / got["ours_ms_mean"], rel=1e-2)


def test_check_official_interleaves_rounds_and_takes_medians(monkeypatch, tmp_path):
    """Per (file, threads): ours and the official tool alternate round by round, each side's mean
    latency is the median over rounds, and the ratio is official / ours."""
    from gram_tf.bench import official

    calls = []
    ours, theirs = iter([2.0, 4.0, 3.0] * 4), iter([5.0, 1.0, 6.0] * 4)

    def fake_ours(kind, path, threads, runs, warmup, _):
        calls.append(("ours", path.name, threads, runs, warmup))
        return {"latency_ms_mean": next(ours)}

    def fake_official(path, threads, runs, warmup):
        calls.append(("official", path.name, threads, runs, warmup))
        return {"latency_ms_mean": next(theirs)}

    monkeypatch.setattr(official, "run_worker", fake_ours)
    monkeypatch.setattr(official, "run_official", fake_official)
    rows = official.check_official([tmp_path / "a.tflite", tmp_path / "b.tflite"], threads=(1, 2), runs=7,
                                   warmup=2, rounds=3)
    assert [(r["file"], r["threads"]) for r in rows] == [("a.tflite", 1), ("a.tflite", 2), ("b.tflite", 1),
                                                          ("b.tflite", 2)]
    for r in rows:
        assert (r["ours_ms_mean"], r["official_ms_mean"], r["official_over_ours"], r["rounds"]) == (3.0, 5.0,
                                                                                                     1.667, 3)
    assert [c[0] for c in calls] == ["ours", "official"] * 12
    assert calls[:6] == [(who, "a.tflite", 1, 7, 2) for who in ("ours", "official") * 3]


def test_neighbour_meter_counts_other_processes_cpu_and_not_ours():
    import time

    from gram_tf.bench.device import NeighbourMeter

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        theirs, ours = NeighbourMeter().start(), NeighbourMeter([burner.pid]).start()
        time.sleep(1.0)
        busy_theirs, busy_ours = theirs.stop(), ours.stop()
    finally:
        burner.kill()
        burner.wait()
    # the burner is a neighbour to one meter and one of "our" timing processes to the other
    assert busy_theirs - busy_ours > 0.5 and busy_ours >= 0.0


def test_noise_guard_flags_a_steady_neighbour_that_leaves_no_spread():
    from gram_tf.report.stats import noise_warning

    quiet = [{"variant": "fp32", "threads": 2, "device": "d", "noise_pct": 3.0, "busy_cores": 0.1}]
    assert noise_warning(quiet, 15.0, 0.5) is None
    busy = [{**quiet[0], "busy_cores": 1.0}]
    warn = noise_warning(busy, 15.0, 0.5)
    assert warn.startswith("other processes kept 1.0 cores busy while timing (limit 0.5)") and "unreliable" in warn
    both = noise_warning([{**busy[0], "noise_pct": 30.0}], 15.0, 0.5)
    assert both.startswith("timing noise 30 %") and "; other processes kept 1.0 cores" in both


# ------------------------------------------------------------------------ external test sets (issue 33)


def _external_folder(synth_manifest, root, classes):
    """An ImageFolder of the test images of `classes` (a lab's set may lack a class)."""
    import shutil

    from gram_tf.data import read_manifest

    for r in read_manifest(synth_manifest):
        if r["split"] == "test" and r["label"] in classes:
            (root / r["label"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(r["path"], root / r["label"])
    return root


def test_every_model_is_evaluated_on_an_external_set(artifacts, synth_manifest, tmp_path, capsys):
    """One untimed row per model (Keras included) and set; a class the set lacks is one notice line."""
    other = _external_folder(synth_manifest, tmp_path / "other", ["gram_positive"])
    rows = bench_paths([artifacts], threads=[1], rounds=1, runs=1, warmup=0, progress=False,
                       external={"other_lab": str(other)})
    notice = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("notice:")]
    assert len(notice) == 1 and "other_lab" in notice[0] and "no images of gram_negative" in notice[0]
    inside = {r["variant"]: r for r in rows if r["dataset"] == "test"}
    ext = {r["variant"]: r for r in rows if r["dataset"] == "other_lab"}
    assert set(inside) == set(ext) == {"fp32", "int8", "keras"} and len(rows) == 6
    n = len(list((other / "gram_positive").iterdir()))
    for v, r in ext.items():
        assert list(r) == ROW_COLUMNS
        assert r["threads"] is None and r["latency_ms_p50"] is None and r["speedup_vs_fp32"] is None
        assert r["n_test"] == n and len(r["correct"]) == n and len(r["predicted"].split(";")) == n
        assert r["accuracy"] == pytest.approx(r["correct"].count("1") / n)
        assert set(r["predicted"].split(";")) <= {"0", "1"}
        # labels in the model's order: correct is predicted == gram_positive (index 1)
        assert r["correct"] == "".join("1" if p == "1" else "0" for p in r["predicted"].split(";"))
        assert inside[v]["latency_ms_p50"] > 0 and len(inside[v]["predicted"].split(";")) == inside[v]["n_test"]
    assert ext["keras"]["predicted"] == ext["fp32"]["predicted"]  # the float model and its .tflite agree there too


def test_external_set_class_checks_before_any_timing(artifacts, synth_manifest, tmp_path, monkeypatch):
    from gram_tf.bench import litert

    def no_timing(*a, **k):
        raise AssertionError("timed before the external sets were checked")

    monkeypatch.setattr(litert, "time_in_rounds", no_timing)
    bad = _external_folder(synth_manifest, tmp_path / "bad", ["gram_positive"])
    (bad / "gram_variable").mkdir()
    (bad / "gram_variable" / "x.png").write_bytes((bad / "gram_positive").iterdir().__next__().read_bytes())
    with pytest.raises(GramTFError, match=r"external set 'bad_lab' \(.*bad\): class folder 'gram_variable' is not "
                                          r"a class of the model \(gram_negative, gram_positive\)"):
        bench_paths([artifacts], threads=[1], rounds=1, runs=1, progress=False, external={"bad_lab": str(bad)})
    for external, needle in [({"test": str(bad)}, "in-domain split"), ({"x": str(tmp_path / "none")}, "does not exist")]:
        with pytest.raises(GramTFError, match=needle):
            bench_paths([artifacts], threads=[1], rounds=1, runs=1, progress=False, external=external)
    with pytest.raises(GramTFError, match="drop --no-eval"):
        bench_paths([artifacts], evaluate=False, progress=False, external={"x": str(bad)})
    # the CLI: NAME=DIR, repeatable, one line for a bad pair
    for argv, needle in [(["--external", "nodir"], "expected NAME=DIR"),
                         (["--external", f"a={bad}", "--external", f"a={bad}"], "given twice"),
                         (["--external", f"a b={bad}"], "one folder name")]:
        res = CliRunner().invoke(main, ["bench", str(artifacts), *argv])
        assert res.exit_code == 2 and res.output.startswith("error: ") and needle in res.output, res.output
