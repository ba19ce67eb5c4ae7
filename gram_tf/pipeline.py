"""`gram-tf run CONFIG`: the whole study from one YAML.

data (synthesise or a folder) -> split -> external test sets (data.external: folders, or synthetic
renderings in a shifted style made here) -> per backbone: train -> prune levels -> convert variants
-> bench (timing on the test split; accuracy on it and on every external set) -> report. Each stage
records a key (hash of its config and inputs) in <out>/<name>/stages/; a stage whose key matches and whose outputs exist is skipped, so an
interrupted or extended study resumes where it stopped.
"""
from __future__ import annotations

import time
from pathlib import Path

import dataclasses
import os
import shutil

from . import data as data_mod
from .bench import bench_paths
from .bench.litert import check_external_name
from .config import StudyConfig, config_hash, dump_yaml
from .convert import convert_run, get_variant
from .data.synth import get_style
from .deploy import MANIFEST_NAME
from .errors import GramTFError
from .io_utils import atomic_write_json, folder_lock, read_json, require_dir, sha256_file
from .models import get_backbone
from .optimize import prune_run
from .report import build_report, load_results, write_results
from .report.stats import noise_warning
from .train import train
STAGES_DIR = "stages"  # its presence marks a folder as a study's


class _Stages:
    """Stage bookkeeping: keys on disk, a counter of what ran, and one progress line per stage."""

    def __init__(self, root: Path, total: int, progress: bool):
        self.dir = root / STAGES_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.total = total
        self.index = 0
        self.progress = progress
        self.ran, self.skipped = [], []
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
        self.index += 1
        (self.skipped if skipped else self.ran).append(name)
        if self.progress:
            state = "cached" if skipped else "running"
            print(f"[{self.index}/{self.total}] {name}: {state} (t={time.perf_counter() - self.t0:.0f}s)", flush=True)

    def finish(self, name: str, key: str, result):
        atomic_write_json(self.dir / f"{name}.json", {"key": key, "result": result})


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
    # everything the config names is checked before any work or file: a typo costs nothing
    for backbone in cfg.backbones:
        get_backbone(backbone)
    for variant in [*cfg.convert.variants, *cfg.convert.pruned_variants]:
        get_variant(variant)
    for name, ext in cfg.data.external.items():
        check_external_name(name, f"data.external.{name}")
        if ext.synth_style is not None:
            get_style(ext.synth_style)
    root = _writable(Path(cfg.out) / cfg.name, "the study's output folder (out / --out)")
    tflite_dir = _writable(Path(cfg.tflite_dir) / cfg.name, "tflite_dir")
    _require_study_folder(root)
    _claim(tflite_dir, root)
    with folder_lock(root, "gram-tf run"):
        return _run_study(cfg, root, tflite_dir, progress)


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


def _run_study(cfg: StudyConfig, root: Path, tflite_dir: Path, progress: bool) -> dict:
    dump_yaml(cfg, root / "config.yaml")
    n_levels = len(cfg.prune.levels)
    synth_sets = any(e.synth_style is not None for e in cfg.data.external.values())
    stages = _Stages(root, 1 + synth_sets + len(cfg.backbones) * (2 + 2 * n_levels) + 2, progress)

    manifest = _data_stage(cfg, root, stages)
    external = _external_stage(cfg, root, manifest, stages)
    manifest_sha = sha256_file(manifest)
    artifacts: list[str] = []  # this config's artifacts, in order: what bench times, nothing else
    for backbone in cfg.backbones:
        run_dir = root / "runs" / backbone
        train_cfg = cfg.train
        if backbone in cfg.backbone_weights:
            train_cfg = dataclasses.replace(cfg.train, weights=cfg.backbone_weights[backbone])
        key = config_hash({"train": train_cfg, "seed": cfg.seed, "manifest": manifest_sha, "backbone": backbone,
                           "weights_dir": cfg.weights_dir})
        name = f"train-{backbone}"
        if stages.done(name, key) is not None and (run_dir / "run.json").is_file():
            stages.start(name, skipped=True)
        else:
            stages.start(name, skipped=False)
            run = train(manifest, backbone, run_dir, train_cfg, seed=cfg.seed, weights_dir=cfg.weights_dir,
                        progress=progress)
            stages.finish(name, key, {"metrics": run["metrics"]})
        train_key = key
        sources = [(run_dir, cfg.convert.variants, train_key)]
        for level in cfg.prune.levels:
            name = f"prune-{backbone}-{int(round(level * 100)):02d}"
            pkey = config_hash({"prune": cfg.prune, "level": level, "parent": train_key})
            pdir = run_dir / f"pruned_{int(round(level * 100)):02d}"
            if stages.done(name, pkey) is not None and (pdir / "run.json").is_file():
                stages.start(name, skipped=True)
            else:
                stages.start(name, skipped=False)
                result = prune_run(run_dir, cfg.prune, seed=cfg.seed, progress=progress, levels=[level])
                stages.finish(name, pkey, result)
            sources.append((pdir, cfg.convert.pruned_variants, pkey))
        for src_dir, variants, src_key in sources:
            tag = src_dir.name if src_dir != run_dir else "dense"
            name = f"convert-{backbone}-{tag}"
            ckey = config_hash({"convert": cfg.convert, "variants": variants, "source": src_key})
            rec = stages.done(name, ckey)
            if rec is not None and _outputs_intact(tflite_dir, rec):
                stages.start(name, skipped=True)
                artifacts += rec
                continue
            stages.start(name, skipped=False)
            made = convert_run(src_dir, variants, out_dir=tflite_dir, cfg=cfg.convert, seed=cfg.seed,
                               progress=progress)
            stages.finish(name, ckey, [a["file"] for a in made["artifacts"]])
            artifacts += [a["file"] for a in made["artifacts"]]

    files = sorted(tflite_dir / f for f in dict.fromkeys(artifacts))
    if not files:
        raise GramTFError(f"no artifacts in {tflite_dir}; check convert.variants")
    # the noise guard's limits only change the report, not the timing
    timing = {k: v for k, v in dataclasses.asdict(cfg.bench).items() if k not in ("max_noise_pct", "max_busy_cores")}
    labels = data_mod.manifest_labels(data_mod.read_manifest(manifest))
    bkey = config_hash({"bench": timing, "files": [sha256_file(f) for f in files]}
                       | ({"external": _external_hashes(external, labels)} if external else {}))
    results_csv = root / "results.csv"
    rec = stages.done("bench", bkey)
    if rec is not None and results_csv.is_file():
        stages.start("bench", skipped=True)
        rows = load_results([results_csv])
    else:
        stages.start("bench", skipped=False)
        rows = bench_paths(files, threads=cfg.bench.threads, rounds=cfg.bench.rounds, runs=cfg.bench.runs,
                           warmup=cfg.bench.warmup,
                           max_seconds=cfg.bench.max_seconds, keras_reference=cfg.bench.keras_reference,
                           progress=progress, run_name=cfg.name, device=cfg.bench.device, external=external)
        write_results(rows, results_csv)
        stages.finish("bench", bkey, {"rows": len(rows)})
    stages.start("report", skipped=False)
    warn = noise_warning(rows, cfg.bench.max_noise_pct, cfg.bench.max_busy_cores)
    if warn and progress:
        print(f"warning: {warn}", flush=True)
    made = build_report(rows, root / "report", max_drop=cfg.report.max_drop_pp / 100, title=f"gram_tf study: {cfg.name}",
                        max_noise_pct=cfg.bench.max_noise_pct, max_busy_cores=cfg.bench.max_busy_cores,
                        selective_target=cfg.report.selective_target, auto_on=cfg.report.auto_on)
    return {"rows": rows, "report": made["report"], "auto": made.get("auto"),
            "stages": {"ran": stages.ran, "skipped": stages.skipped}, "root": str(root)}
