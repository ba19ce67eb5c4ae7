"""`gram-tf run --executor ray`: the study's DAG as Ray tasks on a local Ray instance (2 CPUs, tiny models).

One study runs as a user would run it: started on `local` and interrupted, finished on `ray` while a
worker dies in the middle of a conversion, then its conversions and benchmarks are redone on `local`
for reference. The tests below each check one promise of the executor against that record."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gram_tf.cli import main
from gram_tf.config import load_config
from gram_tf.errors import GramTFError
from gram_tf.report.schema import DEVICE_COLUMNS

from .test_pipeline import TINY

ROOT = Path(__file__).resolve().parents[1]
KILL_ENV = "GRAM_TF_TEST_KILL_ONCE"
SLOW_BENCH_S = 3
RAY_LOG = re.compile(r"^(\x1b\[[\d;]*m)?\((raylet|\S+ pid=\d+)")  # a line Ray forwards from a worker or raylet
# the quickstart's shape at tiny sizes: two backbones (two branches of the DAG that Ray runs at once), a
# pruning level (a prune task per branch, beside the other branch's conversions; its cheapest recipe: the
# default per-layer sensitivity scan and refit cost a minute here) and an external test set
TWO = {**TINY, "name": "two", "backbones": ["mobilenet_v1_025", "mobilenet_v2_035"],
       "prune": {**TINY["prune"], "epochs": 1, "allocation": "uniform", "method": "gradual", "distill": 0},
       "bench": {**TINY["bench"], "rounds": 2}}
# what a re-timing changes: every latency figure, what is derived from them, and the machine's labels
TIMED = {"latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "first_ms",
         "init_ms", "images_per_s", "peak_rss_mb", "latency_ms_ci_low", "latency_ms_ci_high", "round_ms", "spread_pct",
         "speedup_vs_fp32", "speedup_ci_low", "speedup_ci_high", "gmacs_per_s", "noise_pct", "busy_cores",
         *DEVICE_COLUMNS}


def ray_or_skip():
    """Ray, which the `ray` extra installs; only outside CI may a missing Ray skip these tests."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed; .ci/run installs the 'ray' extra")
        pytest.skip("ray is not installed (pip install -e '.[ray]')")
    return ray


def worker_setup():
    """Each Ray worker's setup hook. The first artifact written after KILL_ENV's file is removed ends its
    worker (os._exit), as a killed or out-of-memory worker ends, its conversion half done. A bench task
    takes seconds longer, so that any task the scheduler let share its node would overlap it."""
    import time

    import gram_tf.convert.stage as stage
    import gram_tf.pipeline as pipeline

    marker, export, bench = os.environ[KILL_ENV], stage.export_artifact, pipeline.bench_paths

    def export_then_die(*args, **kwargs):
        entry = export(*args, **kwargs)
        try:
            os.unlink(marker)  # one worker wins: the retry runs with the hook disarmed
        except FileNotFoundError:
            return entry
        os._exit(1)

    def slow_bench(*args, **kwargs):
        time.sleep(SLOW_BENCH_S)
        return bench(*args, **kwargs)

    stage.export_artifact, pipeline.bench_paths = export_then_die, slow_bench


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records(root: Path, prefix: str) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (root / "stages").glob(f"{prefix}*.json")}


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    ray = ray_or_skip()
    from gram_tf.pipeline import BENCH_RESOURCE

    marker = tmp_path_factory.mktemp("hook") / "kill-once"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", num_cpus=2, resources={BENCH_RESOURCE: 1}, include_dashboard=False,
             logging_level="ERROR", runtime_env={"env_vars": {"PYTHONPATH": path, KILL_ENV: str(marker)},
                                                 "worker_process_setup_hook": worker_setup})
    yield marker
    ray.shutdown()


@pytest.fixture(scope="module")
def study(ray_instance, tmp_path_factory):
    """local (interrupted at the first conversion) -> ray (a worker killed in a conversion) -> local again for
    the conversions and benchmarks, the reference. Returns what each left behind."""
    import gram_tf.pipeline as pipeline

    tmp = tmp_path_factory.mktemp("study")
    cfg = load_config(None, {**TWO, "out": str(tmp / "runs"), "tflite_dir": str(tmp / "tfl")})
    root, tfl = tmp / "runs" / "two", tmp / "tfl" / "two"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "convert_run", interrupt)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run_study(cfg, progress=False)
    interrupted = set(records(root, ""))

    ray_instance.write_text("armed")
    on_ray = pipeline.run_study(cfg, progress=False, executor="ray")
    killed = not ray_instance.exists()
    ray_files = {p.name: sha256(p) for p in tfl.glob("*.tflite")}
    ray_records = records(root, "")

    for name in [*records(root, "convert-"), *records(root, "bench-")]:
        (root / "stages" / f"{name}.json").unlink()
    shutil.rmtree(tfl)
    tfl.mkdir()
    (tfl / pipeline.STUDY_FILE).write_text(json.dumps({"study": str(root.resolve())}))
    local = pipeline.run_study(cfg, progress=False)
    return {"interrupted": interrupted, "ray": on_ray, "killed": killed, "ray_files": ray_files,
            "ray_records": ray_records, "local": local, "local_files": {p.name: sha256(p) for p in tfl.glob("*.tflite")},
            "tfl": tfl}


def test_ray_makes_the_artifacts_and_rows_local_makes(study):
    """Conversion is deterministic: the same bytes from either executor; rows equal but for timings."""
    assert len(study["ray_files"]) == 6 and study["ray_files"] == study["local_files"]  # 2 x (fp32, int8, pruned fp32)
    strip = [{k: v for k, v in r.items() if k not in TIMED} for r in study["ray"]["rows"]]
    again = [{k: v for k, v in r.items() if k not in TIMED} for r in study["local"]["rows"]]
    assert len(strip) == len(again) > 6 and strip == again
    # rows name the Ray node that timed them; local rows keep the machine's label
    assert all(" @ " in r["device"] for r in study["ray"]["rows"])


def test_a_study_interrupted_on_local_resumes_on_ray_with_only_the_missing_stages(study):
    assert study["interrupted"] == {"data", "external", "train-mobilenet_v1_025", "prune-mobilenet_v1_025-50"}
    stages = study["ray"]["stages"]
    assert set(stages["skipped"]) == study["interrupted"] - {"external"}  # the external sets' record: the data task's
    assert set(stages["ran"]) == {"train-mobilenet_v2_035", "prune-mobilenet_v2_035-50", "report",
                                  *(f"{s}-{b}{t}" for b in TWO["backbones"]
                                    for s, t in (("convert", "-dense"), ("convert", "-pruned_50"), ("bench", "")))}


def test_a_worker_killed_in_a_conversion_is_retried_and_the_artifacts_verify(study):
    from gram_tf.pipeline import _outputs_intact

    assert study["killed"], "the hook never killed a worker"
    converts = {n: r for n, r in study["ray_records"].items() if n.startswith("convert-")}
    assert len(converts) == 4
    # the local reference redid the conversions: check the ray run's files against its own records
    for name, rec in converts.items():
        assert rec["result"] and all(study["ray_files"].get(f) for f in rec["result"]), name
    assert _outputs_intact(study["tfl"], [f for r in converts.values() for f in r["result"]])


def test_bench_tasks_hold_their_node_alone(study):
    """No task of the study ran on a node while a bench task timed there (the records' start and end times)."""
    ran = [t for t in study["ray"]["tasks"] if t["state"] == "ran"]
    benches = [t for t in ran if t["name"].startswith("bench-")]
    assert len(benches) == 2 and all(b["finished"] - b["started"] > SLOW_BENCH_S for b in benches)
    for bench in benches:
        for other in ran:
            if other is not bench and other["node"] == bench["node"]:
                assert other["finished"] <= bench["started"] or other["started"] >= bench["finished"], \
                    (bench["name"], other["name"])
    recorded = [study["ray_records"][b["name"]] for b in benches]
    assert all(r["node"] == b["node"] and r["started"] >= b["started"] for r, b in zip(recorded, benches))


def test_bad_input_fails_as_one_line_on_either_executor(ray_instance, tmp_path):
    """A config error before any task, and bad input met inside a Ray task: the same `error:` line as local."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "backbones": ["mobilenet_v9"], "out": str(tmp_path / "o")}))
    res = CliRunner().invoke(main, ["run", str(bad), "--executor", "ray"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "mobilenet_v9" in res.output, res.output

    broken = tmp_path / "broken.csv"
    broken.write_text("not,a,manifest\n")
    lines = {}
    for executor in ("local", "ray"):
        cfg = tmp_path / f"{executor}.yaml"
        cfg.write_text(yaml.safe_dump({**TINY, "name": executor, "data": {"manifest": str(broken)},
                                       "out": str(tmp_path / "o"), "tflite_dir": str(tmp_path / "t")}))
        res = CliRunner().invoke(main, ["run", str(cfg), "--executor", executor])
        # what Ray forwards from its processes (a fresh worker's TensorFlow start-up lines) is theirs
        ours = [line for line in res.output.splitlines() if not RAY_LOG.match(line)]
        assert res.exit_code == 2 and len(ours) == 1 and "Traceback" not in res.output, res.output
        lines[executor] = ours[0]
    assert lines["ray"] == lines["local"] and lines["ray"].startswith("error: ") and str(broken) in lines["ray"]


def test_a_worker_that_cannot_see_the_study_folder_says_so(tmp_path):
    from gram_tf.pipeline import SESSION_FILE, _enter_study

    here = os.getcwd()
    try:
        with pytest.raises(GramTFError, match=r"node n1 cannot see .*/nowhere, the folder gram-tf run was started in"):
            _enter_study(str(tmp_path / "nowhere"), Path("runs/x"), "t0", "n1")
        (tmp_path / "runs" / "x").mkdir(parents=True)
        (tmp_path / "runs" / "x" / SESSION_FILE).write_text(json.dumps({"token": "other"}))
        with pytest.raises(GramTFError, match="cannot see the study folder .*another one by that name"):
            _enter_study(str(tmp_path), Path("runs/x"), "t0", "n1")
        (tmp_path / "runs" / "x" / SESSION_FILE).write_text(json.dumps({"token": "t0"}))
        _enter_study(str(tmp_path), Path("runs/x"), "t0", "n1")
    finally:
        os.chdir(here)
