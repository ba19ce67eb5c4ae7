"""`gram-tf run CONFIG`: the whole study from one YAML.

The study is a DAG of stage tasks: data (synthesise or a folder, split, and the external test sets of
data.external: folders, or synthetic renderings in a shifted style made here) -> per backbone: train -> per prune level: prune -> per source
(the dense run, each pruned one): convert -> per backbone: bench (timing on the test split; accuracy on it and on every external set) -> report. Each stage records a key (hash
of its config and inputs) in <out>/<name>/stages/, written only after its outputs verify; a stage whose
key matches and whose outputs exist is skipped, so an interrupted or extended study resumes where it
stopped. An executor runs the DAG: `local` one task after the other in this process, `ray` as Ray tasks
on a cluster (docs/cluster.md). Both run the same task code on the same folders, so either finishes
what the other started.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import dataclasses
import os
import shutil
import socket

from . import data as data_mod
from .bench import bench_paths, cpu_flags
from .bench.litert import check_external_name
from .config import EXECUTORS, StudyConfig, config_hash, dump_yaml
from .convert import convert_run, get_variant
from .data.synth import get_style
from .deploy import MANIFEST_NAME
from .errors import GramTFError, one_line
from .io_utils import atomic_write_json, folder_lock, read_json, require_dir, sha256_file
from .models import get_backbone
from .optimize import prune_run
from .report import build_report, load_results, write_results
from .report.stats import noise_warning
from .run import RUN_FILE
from .train import train
STAGES_DIR = "stages"  # its presence marks a folder as a study's
BENCH_DIR = "bench"  # each backbone's bench rows (bench-<backbone>); results.csv joins them


class _Stages:
    """Stage bookkeeping of one process: keys on disk, what ran, and (with `progress`) one line per stage.

    `node` names where the stages run and `device` labels their bench rows; a stage record keeps the
    node and its start and end times (the bench tasks' times show that timings never overlapped)."""

    def __init__(self, root: Path, total: int = 0, progress: bool = False, node: Optional[str] = None,
                 device: Optional[str] = None):
        self.dir = root / STAGES_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.total = total
        self.index = 0
        self.progress = progress
        self.node, self.device = node, device
        self.ran, self.skipped = [], []
        self.started = None  # when the current task began (time.time())
        self.t0 = time.perf_counter()

    def done(self, name: str, key: str):
        path = self.dir / f"{name}.json"
        if path.is_file():
            try:
                rec = read_json(path)
            except ValueError:
                return None
            if rec.get("key") == key:
                return rec.get("result")
        return None

    def start(self, name: str, skipped: bool):
        (self.skipped if skipped else self.ran).append(name)
        self.line(name, "cached" if skipped else "running", self.node)

    def line(self, name: str, state: str, node: Optional[str]):
        self.index += 1
        if self.progress:
            where = f" on {node}" if node else ""
            print(f"[{self.index}/{self.total}] {name}: {state}{where} (t={time.perf_counter() - self.t0:.0f}s)",
                  flush=True)

    def finish(self, name: str, key: str, result):
        atomic_write_json(self.dir / f"{name}.json", {"key": key, "result": result, "node": self.node,
                                                     "started": self.started, "finished": time.time()})


def _pct(level: float) -> str:
    return f"{int(round(level * 100)):02d}"


def _data_stage(cfg: StudyConfig, root: Path, stages: _Stages) -> Path:
    if cfg.data.manifest:
        manifest = Path(cfg.data.manifest)
        data_mod.read_manifest(manifest)  # validates
        stages.start("data", skipped=True)
        return manifest
    manifest = root / "manifest.csv"
    # the split groups as `train --data` and `data split` do: data.group_pattern, else by specimen for
    # a synthetic folder (data.synth's own folder included), else each file alone
    if cfg.data.dir:
        source = Path(cfg.data.dir)
        items, classes, _ = data_mod.scan_image_folder(source)
        key = config_hash({"dir": str(source.resolve()), "data": cfg.data, "seed": cfg.seed,
                           "files": sorted(str(p) for p, _ in items),
                           "group_pattern": data_mod.resolve_group_pattern(items, classes, cfg.data.group_pattern)})
    else:
        source = root / "data"
        key = config_hash({"synth": cfg.data, "seed": cfg.seed})
    if stages.done("data", key) is not None and manifest.is_file():
        stages.start("data", skipped=True)
        return manifest
    stages.start("data", skipped=False)
    if not cfg.data.dir:
        data_mod.synthesize_dataset(source, cfg.data.synth_per_class, size=cfg.data.synth_size, seed=cfg.seed,
                           progress=stages.progress)
    rows = data_mod.split_dataset(source, cfg.data.val, cfg.data.test, cfg.seed, cfg.data.group_pattern,
                                  progress=stages.progress)
    data_mod.write_manifest(rows, manifest)
    stages.finish("data", key, {"manifest": str(manifest), "splits": data_mod.summarize_split(rows)})
    return manifest


EXTERNAL_DIR = "external"  # <out>/<name>/external/<set>: the synthetic external sets a study renders
EXTERNAL_SEED_OFFSET = 1  # their specimens: other slides than the study's own (seed + 1), same classes


def _external_stage(cfg: StudyConfig, root: Path, manifest: Path, stages: _Stages) -> dict:
    """{name: folder} of data.external, each checked against the study's classes before any training;
    the synthetic sets are rendered first (a stage of their own, redone when their settings change)."""
    if not cfg.data.external:
        return {}
    synth = {n: e for n, e in cfg.data.external.items() if e.synth_style is not None}
    folder = {n: Path(e.dir) if e.dir is not None else root / EXTERNAL_DIR / n for n, e in cfg.data.external.items()}
    if synth:
        key = config_hash({"external": {n: dataclasses.asdict(e) for n, e in synth.items()},
                           "per_class": cfg.data.synth_per_class, "size": cfg.data.synth_size, "seed": cfg.seed})
        if stages.done("external", key) is not None and all(folder[n].is_dir() for n in synth):
            stages.start("external", skipped=True)
        else:
            stages.start("external", skipped=False)
            made = {}
            for n, e in synth.items():
                shutil.rmtree(folder[n], ignore_errors=True)  # files of another style must not stay beside these
                made[n] = data_mod.synthesize_dataset(
                    folder[n], e.synth_per_class or cfg.data.synth_per_class, size=cfg.data.synth_size,
                    seed=cfg.seed + EXTERNAL_SEED_OFFSET, style=e.synth_style, progress=stages.progress)
            stages.finish("external", key, made)
    labels = data_mod.manifest_labels(data_mod.read_manifest(manifest))
    for n, f in folder.items():
        data_mod.external_items(f, labels, n, quiet=True)  # an unknown class: one line before any training
    return folder


def _external_hashes(external: dict, labels) -> dict:
    """What the bench stage key holds of each external set: every file's class path and sha256."""
    return {n: [(str(p.relative_to(f)), sha256_file(p)) for p, _ in data_mod.external_items(f, labels, n, quiet=True)]
            for n, f in external.items()}


def run_study(cfg: StudyConfig, progress: bool = True) -> dict:
    """Run (or resume) the study described by `cfg`; returns {'rows', 'report', 'stages'}."""


@dataclass(frozen=True)
class Task:
    """One stage of the DAG: `name` is its stage (stages/<name>.json), `deps` the tasks whose outcomes it reads."""
    name: str
    kind: str  # a key of STAGE_KINDS
    deps: tuple = ()
    backbone: Optional[str] = None
    level: Optional[float] = None  # prune: its level; convert: its source's level (None: the dense run)


def plan(cfg: StudyConfig) -> list[Task]:
    """The study's DAG in an order that runs it one task after the other (what `local` does)."""
    tasks, benches = [Task("data", "data")], []
    for backbone in cfg.backbones:
        train_task = Task(f"train-{backbone}", "train", ("data",), backbone)
        converts = [Task(f"convert-{backbone}-dense", "convert", (train_task.name,), backbone)]
        tasks.append(train_task)
        for level in cfg.prune.levels:
            prune_task = Task(f"prune-{backbone}-{_pct(level)}", "prune", (train_task.name,), backbone, level)
            tasks.append(prune_task)
            converts.append(Task(f"convert-{backbone}-pruned_{_pct(level)}", "convert", (prune_task.name,), backbone,
                                 level))
        tasks += converts
        benches.append(Task(f"bench-{backbone}", "bench", ("data", *(c.name for c in converts)), backbone))
    return tasks + benches


def _data_task(cfg, root, tflite_dir, stages, task, inputs) -> dict:
    manifest = _data_stage(cfg, root, stages)
    external = _external_stage(cfg, root, manifest, stages)  # rendered and checked before any training
    return {"manifest": str(manifest), "sha256": sha256_file(manifest),
            "external": {n: str(f) for n, f in external.items()}}


def _train_task(cfg, root, tflite_dir, stages, task, inputs) -> dict:
    backbone, data = task.backbone, inputs["data"]
    run_dir = root / "runs" / backbone
    train_cfg = cfg.train
    if backbone in cfg.backbone_weights:
        train_cfg = dataclasses.replace(cfg.train, weights=cfg.backbone_weights[backbone])
    key = config_hash({"train": train_cfg, "seed": cfg.seed, "manifest": data["sha256"], "backbone": backbone,
                       "weights_dir": cfg.weights_dir})
    if stages.done(task.name, key) is not None and (run_dir / RUN_FILE).is_file():
        stages.start(task.name, skipped=True)
    else:
        stages.start(task.name, skipped=False)
        run = train(Path(data["manifest"]), backbone, run_dir, train_cfg, seed=cfg.seed, weights_dir=cfg.weights_dir,
                    progress=stages.progress)
        _verify(task.name, run_dir / RUN_FILE)
        stages.finish(task.name, key, {"metrics": run["metrics"]})
    return {"key": key, "run_dir": str(run_dir)}


def _prune_task(cfg, root, tflite_dir, stages, task, inputs) -> dict:
    parent = inputs[f"train-{task.backbone}"]
    key = config_hash({"prune": cfg.prune, "level": task.level, "parent": parent["key"]})
    pdir = Path(parent["run_dir"]) / f"pruned_{_pct(task.level)}"
    if stages.done(task.name, key) is not None and (pdir / RUN_FILE).is_file():
        stages.start(task.name, skipped=True)
    else:
        stages.start(task.name, skipped=False)
        result = prune_run(parent["run_dir"], cfg.prune, seed=cfg.seed, progress=stages.progress, levels=[task.level])
        _verify(task.name, pdir / RUN_FILE)
        stages.finish(task.name, key, result)
    return {"key": key, "run_dir": str(pdir)}


def _convert_task(cfg, root, tflite_dir, stages, task, inputs) -> dict:
    (source,) = inputs.values()
    variants = cfg.convert.variants if task.level is None else cfg.convert.pruned_variants
    key = config_hash({"convert": cfg.convert, "variants": variants, "source": source["key"]})
    rec = stages.done(task.name, key)
    if rec is not None and _outputs_intact(tflite_dir, rec):
        stages.start(task.name, skipped=True)
        return {"files": rec}
    stages.start(task.name, skipped=False)
    # the DAG's conversions write disjoint files of one folder, possibly at once (shared=True)
    made = convert_run(source["run_dir"], variants, out_dir=tflite_dir, cfg=cfg.convert, seed=cfg.seed,
                       progress=stages.progress, shared=True)
    files = [a["file"] for a in made["artifacts"]]
    if not _outputs_intact(tflite_dir, files):
        raise GramTFError(f"{task.name}: the artifacts in {tflite_dir} do not match the sha256 their manifest "
                          "records (changed while converting?); run the study again")
    stages.finish(task.name, key, files)
    return {"files": files}


def _bench_task(cfg, root, tflite_dir, stages, task, inputs) -> dict:
    files = sorted(tflite_dir / f for f in dict.fromkeys(f for d in task.deps for f in inputs[d].get("files", ())))
    if not files:
        raise GramTFError(f"no artifacts in {tflite_dir}; check convert.variants")
    # the noise guard's limits only change the report, not the timing
    timing = {k: v for k, v in dataclasses.asdict(cfg.bench).items() if k not in ("max_noise_pct", "max_busy_cores")}
    data = inputs["data"]
    external = {n: Path(f) for n, f in data.get("external", {}).items()}
    labels = data_mod.manifest_labels(data_mod.read_manifest(data["manifest"]))
    key = config_hash({"bench": timing, "files": [sha256_file(f) for f in files]}
                      | ({"external": _external_hashes(external, labels)} if external else {}))
    out = root / BENCH_DIR / f"{task.backbone}.csv"
    if stages.done(task.name, key) is not None and out.is_file():
        stages.start(task.name, skipped=True)
        return {"csv": str(out), "key": key}
    stages.start(task.name, skipped=False)
    rows = bench_paths(files, threads=cfg.bench.threads, rounds=cfg.bench.rounds, runs=cfg.bench.runs,
                       warmup=cfg.bench.warmup,
                       max_seconds=cfg.bench.max_seconds, keras_reference=cfg.bench.keras_reference,
                       progress=stages.progress, run_name=cfg.name, device=stages.device, external=external)
    write_results(rows, out)
    stages.finish(task.name, key, {"rows": len(rows)})
    return {"csv": str(out), "key": key}


# kind -> (the stage, the CPUs a Ray task of it reserves); a bench task reserves its whole node (_ray_options)
STAGE_KINDS = {
    "data": (_data_task, 1),
    "train": (_train_task, 1),
    "prune": (_prune_task, 1),
    "convert": (_convert_task, 1),
    "bench": (_bench_task, None),
}
# From about ResNet-50's size on, a Ray task also reserves memory, so that two BEiT-base conversions are
# not placed on one node that holds one. An estimate, not a measurement: float weights, gradients, two
# Adam moments, the dense teacher a pruning distils from and the converter's copies of the graph.
LARGE_PARAMS = 20_000_000
BYTES_PER_PARAM = 100


def _verify(name: str, path: Path) -> None:
    """A stage's key is written only after its outputs are there: a killed worker never leaves it done."""
    if not path.is_file():
        raise GramTFError(f"{name}: finished without writing {path}; run the study again")


def run_task(cfg: StudyConfig, root: Path, tflite_dir: Path, task: Task, inputs: dict, stages: _Stages) -> dict:
    """Run one stage of the DAG (or find it cached) in this process; `inputs` holds the outcomes' `out` of
    its deps. Returns its outcome: name, state (ran | cached), node, start and end times, out."""
    started = stages.started = time.time()
    ran = len(stages.ran)
    out = STAGE_KINDS[task.kind][0](cfg, root, tflite_dir, stages, task, inputs)
    return {"name": task.name, "state": "ran" if len(stages.ran) > ran else "cached", "node": stages.node,
            "started": started, "finished": time.time(), "out": out}


def run_study(cfg: StudyConfig, progress: bool = True, executor: str = "local", address: Optional[str] = None) -> dict:
    """Run (or resume) the study described by `cfg` with `executor` (config.EXECUTORS; `address`: the Ray
    cluster to join, else a local Ray instance); returns {'rows', 'report', 'stages'}."""
    # everything the config names is checked before any work or file: a typo costs nothing
    if executor not in EXECUTORS:
        raise GramTFError(f"executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if address and executor != "ray":
        raise GramTFError("--address names a Ray cluster to join; use it with --executor ray")
    for backbone in cfg.backbones:
        get_backbone(backbone)
    for variant in [*cfg.convert.variants, *cfg.convert.pruned_variants]:
        get_variant(variant)
    if executor == "ray":
        _import_ray()
    for name, ext in cfg.data.external.items():
        check_external_name(name, f"data.external.{name}")
        if ext.synth_style is not None:
            get_style(ext.synth_style)
    root = _writable(Path(cfg.out) / cfg.name, "the study's output folder (out / --out)")
    tflite_dir = _writable(Path(cfg.tflite_dir) / cfg.name, "tflite_dir")
    _require_study_folder(root)
    _claim(tflite_dir, root)
    with folder_lock(root, "gram-tf run"):
        return _run_study(cfg, root, tflite_dir, progress, executor, address)


def _writable(path: Path, what: str) -> Path:
    """`path` made and written to once, up front: /proc, /sys, a read-only mount or a full disk is one
    line before any work, not a FileNotFoundError or PermissionError from a stage."""
    import tempfile

    path = require_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise GramTFError(f"{what} {path} cannot be written ({exc.strerror or type(exc).__name__}); "
                          "choose another folder") from None
    return path


STUDY_FILE = ".gram_tf_study.json"


def _require_study_folder(root: Path) -> None:
    """A study writes config.yaml, manifest.csv, data/, runs/ into out/<name>: never into a folder that
    holds files it did not write (with name '.' that was the user's own out folder)."""
    if not root.is_dir() or (root / STAGES_DIR).is_dir():
        return  # new, or a study folder: this study's, resumed
    foreign = sorted(p.name for p in root.iterdir() if not p.name.startswith(".gram_tf"))
    if foreign:
        raise GramTFError(f"{root} already holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
                          "gram-tf run did not write; give the study another name or out folder")


def _claim(tflite_dir: Path, root: Path) -> None:
    """Artifacts belong to one study: two studies of the same name in two --out folders would share
    tflite_models/<name> and read each other's models. The folder records its study on first use."""
    marker = tflite_dir / STUDY_FILE
    mine = str(root.resolve())
    if marker.is_file():
        try:
            owner = read_json(marker).get("study")
        except ValueError:
            owner = None
        if owner and owner != mine and Path(owner).is_dir():
            raise GramTFError(f"{tflite_dir} holds the artifacts of the study in {owner}; give this study its own "
                              f"tflite_dir (--set tflite_dir=...) or another name")
        if owner and owner != mine:  # its study folder is gone (deleted, or the project moved): as a stale lock
            print(f"notice: {tflite_dir} belonged to the study in {owner}, which no longer exists; this study "
                  "takes it over")
            atomic_write_json(marker, {"study": mine})
        return
    # a folder from before the marker existed: its manifest says which runs made the artifacts
    manifest = tflite_dir / MANIFEST_NAME
    try:
        runs = {a.get("run_dir", "") for a in read_json(manifest).get("artifacts", [])} if manifest.is_file() else set()
    except (ValueError, AttributeError):
        runs = {"?"}
    foreign = sorted(r for r in runs if not str(r).startswith(mine + os.sep))
    if foreign or (not runs and any(tflite_dir.glob("*.tflite"))):
        raise GramTFError(f"{tflite_dir} holds artifacts of another run ({(foreign or ['unknown'])[0]}); give this "
                          "study its own tflite_dir (--set tflite_dir=...) or another name")
    atomic_write_json(marker, {"study": mine})


def _outputs_intact(tflite_dir: Path, files) -> bool:
    """Every recorded output exists with the sha256 its manifest entry records."""
    manifest = tflite_dir / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        recorded = {a["file"]: a.get("sha256") for a in read_json(manifest).get("artifacts", [])}
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return all((tflite_dir / f).is_file() and recorded.get(f) == sha256_file(tflite_dir / f) for f in files)


def _run_study(cfg: StudyConfig, root: Path, tflite_dir: Path, progress: bool, executor: str,
               address: Optional[str]) -> dict:
    dump_yaml(cfg, root / "config.yaml")
    tasks = plan(cfg)
    synth_sets = any(e.synth_style is not None for e in cfg.data.external.values())  # their own stage line
    stages = _Stages(root, len(tasks) + 1 + synth_sets, progress)
    outcomes = _EXECUTORS[executor](cfg, root, tflite_dir, tasks, stages, address)

    stages.node = stages.started = None  # what follows runs here, in the driver
    benches = [outcomes[t.name]["out"] for t in tasks if t.kind == "bench"]
    rows = load_results([b["csv"] for b in benches])
    results_csv = root / "results.csv"
    # results.csv joins the bench rows: rewritten only when they changed, so a resumed study keeps it as it was
    rkey = config_hash([b["key"] for b in benches])
    if stages.done("results", rkey) is None or not results_csv.is_file():
        write_results(rows, results_csv)
        stages.finish("results", rkey, {"rows": len(rows)})
    stages.start("report", skipped=False)
    warn = noise_warning(rows, cfg.bench.max_noise_pct, cfg.bench.max_busy_cores)
    if warn and progress:
        print(f"warning: {warn}", flush=True)
    made = build_report(rows, root / "report", max_drop=cfg.report.max_drop_pp / 100, title=f"gram_tf study: {cfg.name}",
                        max_noise_pct=cfg.bench.max_noise_pct, max_busy_cores=cfg.bench.max_busy_cores,
                        selective_target=cfg.report.selective_target, auto_on=cfg.report.auto_on)
    return {"rows": rows, "report": made["report"], "auto": made.get("auto"),
            "stages": {"ran": stages.ran, "skipped": stages.skipped}, "root": str(root),
            "tasks": [outcomes[t.name] for t in tasks]}


def _run_local(cfg, root, tflite_dir, tasks, stages, address) -> dict:
    """Every task in this process, one after the other: the study as it always ran."""
    stages.node, stages.device = socket.gethostname(), cfg.bench.device
    outcomes = {}
    for task in tasks:
        outcomes[task.name] = run_task(cfg, root, tflite_dir, task, {d: outcomes[d]["out"] for d in task.deps},
                                       stages)
    return outcomes


# ------------------------------------------------------------------------------------------ Ray
BENCH_RESOURCE = "gram_tf_bench"  # a node offering it may time models; a bench task holds all its CPUs
RAY_RETRIES = 3  # a task whose worker dies (killed, out of memory, node lost) runs again this many times
SESSION_FILE = ".gram_tf_session.json"  # a token per run: a worker that reads it sees the study folder


def _import_ray():
    # the driver reports the first failure of a task; the tasks that failed with it are no news
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    try:
        import ray
    except ImportError:
        raise GramTFError("--executor ray needs Ray: pip install 'gram-tf[ray]' (docs/cluster.md)") from None
    return ray


def _ray_options(task: Task, bench_node: Optional[tuple]) -> dict:
    """What the task reserves: CPUs, memory for a large backbone; a bench task its whole node, pinned to it,
    so no other task of the study shares that node's cores while it times (every task reserves a CPU)."""
    opts = {"max_retries": RAY_RETRIES, "retry_exceptions": False}
    if task.kind == "bench":
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id, cpus = bench_node
        return {**opts, "num_cpus": cpus, "resources": {BENCH_RESOURCE: 1},
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}
    opts["num_cpus"] = STAGE_KINDS[task.kind][1]
    params = get_backbone(task.backbone).params if task.backbone else None
    if task.kind != "data" and params and params >= LARGE_PARAMS:
        opts["memory"] = params * BYTES_PER_PARAM
    return opts


def _bench_nodes(ray) -> list[tuple]:
    """(node id, CPUs) of every live node offering BENCH_RESOURCE."""
    nodes = sorted((n["NodeID"], int(n["Resources"].get("CPU", 0))) for n in ray.nodes()
                   if n.get("Alive") and n["Resources"].get(BENCH_RESOURCE))
    if not nodes:
        raise GramTFError(f"no node of the Ray cluster offers the resource '{BENCH_RESOURCE}', so none may time the "
                          f"models; start the timing node(s) with ray start ... --resources='{{\"{BENCH_RESOURCE}\": 1}}' "
                          "(docs/cluster.md)")
    return nodes


def _ray_task(cfg, root, tflite_dir, token, cwd, task, *deps):
    """One task on a Ray worker: in the driver's folder, on the same study folder (checked), as `local` runs it."""
    import ray

    context = ray.get_runtime_context()
    node = f"{socket.gethostname()}/{context.get_node_id()[:8]}"
    _enter_study(cwd, root, token, node)
    _limit_threads(max(1, int(context.get_assigned_resources().get("CPU", 1))))
    stages = _Stages(root, node=node, device=f"{cfg.bench.device or cpu_flags()['cpu']} @ {node}")
    return run_task(cfg, root, tflite_dir, task, {d: o["out"] for d, o in zip(task.deps, deps)}, stages)


def _limit_threads(cpus: int) -> None:
    """TensorFlow in a task uses the CPUs the task reserved, not a thread per core of its node: in the test study
    two prunings on 2 cores took 110 and 157 s with a thread per core each, 59 and 87 s with one each."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:  # a reused worker whose TensorFlow already started keeps its first task's setting
        pass


def _enter_study(cwd: str, root: Path, token: str, node: str) -> None:
    """Relative paths of the config mean what they mean to the driver (its working folder, so stage keys
    are the same as local's); a node that does not mount the study's storage fails in one line."""
    fix = "out, tflite_dir and the data must be on storage every node mounts at the same path (docs/cluster.md)"
    try:
        os.chdir(cwd)
    except OSError:
        raise GramTFError(f"node {node} cannot see {cwd}, the folder gram-tf run was started in; {fix}") from None
    try:
        seen = read_json(root / SESSION_FILE).get("token")
    except (OSError, ValueError, AttributeError):
        seen = None
    if seen != token:
        raise GramTFError(f"node {node} cannot see the study folder {Path(cwd) / root} (it has no such folder, or "
                          f"another one by that name); {fix}")


def _connect(ray, address: Optional[str]) -> None:
    common = {"include_dashboard": False, "logging_level": "ERROR"}
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise GramTFError(f"cannot join the Ray cluster at {address} ({one_line(exc, 200)}); start it with "
                              "`ray start --head` or check --address; a cluster with token authentication also needs "
                              "RAY_AUTH_MODE=token and its token here (docs/cluster.md)") from None
    else:  # a fresh instance on this machine, even when a cluster started by `ray start` is running here
        ray.init(address="local", num_cpus=os.cpu_count(), resources={BENCH_RESOURCE: 1}, **common)


def _run_ray(cfg, root, tflite_dir, tasks, stages, address) -> dict:
    """The DAG as Ray tasks: each waits for its deps' outcomes (Ray passes them), runs where its resources
    are free; the driver prints one line per finished task, naming the node that ran it."""
    ray = _import_ray()
    mine = not ray.is_initialized()  # a notebook or a Ray Tune job may have connected already
    if mine:
        _connect(ray, address)
    try:
        bench_nodes = _bench_nodes(ray)
        token = uuid.uuid4().hex
        atomic_write_json(root / SESSION_FILE, {"token": token})
        remote = ray.remote(_ray_task)
        refs, names = {}, {}
        for task in tasks:
            bench_node = bench_nodes[len([r for r in refs if r.startswith("bench-")]) % len(bench_nodes)] \
                if task.kind == "bench" else None
            ref = remote.options(name=task.name, **_ray_options(task, bench_node)).remote(
                cfg, root, tflite_dir, token, os.getcwd(), task, *[refs[d] for d in task.deps])
            refs[task.name], names[ref] = ref, task.name
        return _collect(ray, refs, names, stages)
    finally:
        if mine:
            ray.shutdown()


def _collect(ray, refs: dict, names: dict, stages: _Stages) -> dict:
    outcomes, pending = {}, list(refs.values())
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, (GramTFError, KeyboardInterrupt)):
                        raise cause from None  # bad input: the same one line as local, not a Ray traceback
                    raise
                except ray.exceptions.RayError as exc:  # the worker died more than RAY_RETRIES times, the node left
                    raise GramTFError(f"{names[ref]}: its Ray task failed on all {RAY_RETRIES + 1} attempts "
                                      f"({type(exc).__name__}: {one_line(exc, 200)}); finished stages are kept, run "
                                      "again to resume") from None
                outcomes[outcome["name"]] = outcome
                (stages.ran if outcome["state"] == "ran" else stages.skipped).append(outcome["name"])
                took = f", {outcome['finished'] - outcome['started']:.0f}s" if outcome["state"] == "ran" else ""
                stages.line(outcome["name"], f"{outcome['state']}{took}", outcome["node"])
    finally:
        for ref in pending:  # a failed or interrupted study stops what it started
            ray.cancel(ref)
    return outcomes


_EXECUTORS = {"local": _run_local, "ray": _run_ray}
assert set(_EXECUTORS) == set(EXECUTORS), "config.EXECUTORS names the executors pipeline implements"
