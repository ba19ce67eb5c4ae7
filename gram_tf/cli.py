"""The `gram-tf` command line. Thin: it parses options and calls the library.

TensorFlow is imported only inside the commands that need it, so `gram-tf --help` is fast and
`gram-tf predict` works on a device that has only LiteRT, numpy, Pillow and click.
"""
from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import click

from . import __version__
from .config import _CHOICES, EXECUTORS, RENAMED, BenchConfig, ConvertConfig, Range, ReportConfig, field_range
from .data.synth.style import STYLE_NAMES, STYLES
from .errors import GramTFError, one_line
from .metrics import REFER, SUMMARY
from .table import format_table


class _Group(click.Group):
    """Turns every GramTFError into one line on stderr and exit status 2 (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GramTFError as exc:
            click.echo(f"error: {one_line(exc, 1000)}", err=True)  # one line, even if a value held a newline
            ctx.exit(2)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:  # anything else is a bug to see, not to hide
                raise
            name = str(exc.filename or "a path")
            click.echo(f"error: {name[:80]}{'...' if len(name) > 80 else ''}: a file or folder name is longer than the "
                       "file system allows (255 bytes per name); use a shorter name", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished stages are kept; run the same command again to resume", err=True)
            ctx.exit(130)


def _in_range(spec):
    """Click callback: the option's value (each entry of a list) must lie in `spec`, a Range or the dotted
    name of the config key the option sets, so the range is the one declared beside that key's field."""
    def check(ctx, param, value):
        rng = field_range(spec) if isinstance(spec, str) else spec
        rng.check(value, f"{param.opts[0]}" + (f" ({spec})" if isinstance(spec, str) else ""))
        return value

    return check


def _csv_list(kind, spec=None):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            values = [kind(v.strip()) for v in str(value).split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list of {kind.__name__}, got {value!r}")
        return _in_range(spec)(ctx, param, values) if spec else values

    return parse


class _TableHelp(click.Option):
    """An option whose help is written from a table when help is shown (`help` is a function), so the
    table is not imported on every command: e.g. the variant list, registered by gram_tf.convert."""

    def __init__(self, *args, help, **kwargs):
        super().__init__(*args, **kwargs)
        self._help = help

    def get_help_record(self, ctx):
        self.help = self._help()
        return super().get_help_record(ctx)


def _variants_help() -> str:
    from .convert import variant_names

    return f"comma list of: {', '.join(variant_names())} (default: the config's convert.variants)"


def _calibration_help() -> str:
    from .convert.calibration import SEARCH, SEARCH_CANDIDATES

    tried = ", ".join(dict.fromkeys(m for m, _ in SEARCH_CANDIDATES))
    return ("activation ranges of full-integer variants (auto: percentile for per-tensor int8, search for a "
            "pruned run's, else the converter's minmax; meanmax: the mean of each image's own min/max; "
            f"{SEARCH}: the most accurate of {tried} on val)")


def _deprecated(old: str, new: str, key: str):
    """A hidden option spelled `old`, read in `new`'s unit (RENAMED's factor for config key `key`) with a
    one-line notice on stderr; the command takes `new` or it (`_either`)."""
    factor = next((f for o, (n, f) in RENAMED.items() if n == key), 1)

    def convert(ctx, param, value):
        if value is None:
            return None
        rng = field_range(key)
        Range(rng.lo / factor, rng.hi / factor, rng.lo_open, rng.hi_open).check(value, f"{old} (deprecated)")
        value = round(value * factor, 12)
        click.echo(f"notice: {old} is deprecated; read as {new} {value:g} (percentage points)", err=True)
        return value

    return click.option(old, f"deprecated_{key.split('.')[-1]}", type=float, default=None, hidden=True,
                        callback=convert)


def _either(new_value, old_value, new: str, old: str):
    if new_value is not None and old_value is not None:
        raise GramTFError(f"{old} is the deprecated spelling of {new}; pass only {new}")
    return new_value if new_value is not None else old_value


_WORKERS = Range(1, 1024)  # decode threads of predict
_TOP_K = Range(1, 1000)  # classes shown per image
_SCORE = Range(0, 1)  # predict --min-confidence: a top score
_DEVICE_THREADS = Range(1, 1024)  # bench import: the phone's threads, not this machine's cores


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gram-tf")
def main():
    """gram-tf: train, prune, quantize and benchmark Gram-stain classifiers for CPUs and phones.

    The one-command study:  gram-tf run configs/quickstart.yaml
    """


# ----------------------------------------------------------------------------------------- data
@main.group(cls=_Group)
def data():
    """Make, check and split image datasets (one sub-folder per class)."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--per-class", type=int, required=True, help="images per class", callback=_in_range("data.synth_per_class"))
@click.option("--size", type=int, default=256, show_default=True, help="image side in pixels",
              callback=_in_range("data.synth_size"))
@click.option("--seed", type=int, default=0, show_default=True, callback=_in_range("seed"))
@click.option("--fields-per-specimen", type=int, default=4, show_default=True,
              help="images that share one specimen (its id is in the file name: _sNNNN_)")
@click.option("--style", type=click.Choice(STYLE_NAMES), default=STYLE_NAMES[0], show_default=True,
              help="a shift a lab meets, for an external test set: " + "; ".join(f"{s.name}: {s.shift}" for s in STYLES))
def data_synth(out, per_class, size, seed, fields_per_specimen, style):
    """Generate synthetic Gram-stained micrographs (gram_positive / gram_negative) into OUT."""
    from .data import SYNTH_GROUP_PATTERN, synthesize_dataset

    summary = synthesize_dataset(out, per_class, size=size, seed=seed,
                                 fields_per_specimen=fields_per_specimen, progress=True, style=style)
    click.echo(format_table([{"class": k, "images": v} for k, v in summary["classes"].items()]))
    click.echo(f"{summary['n_written']} written, {summary['n_skipped']} already there -> {out}"
               f"  (splits group by specimen: '{SYNTH_GROUP_PATTERN}')")


_GROUP_PATTERN_HELP = ("regex whose group(1) is the specimen/patient/photo id; no group spans two splits "
                       "(default: by specimen for a 'data synth' folder, else each file alone; '' for that)")


@data.command("check")
@click.argument("directory", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print the full report as JSON")
@click.option("--group-pattern", default=None, help=_GROUP_PATTERN_HELP + "; without one, names that look "
              "grouped get a warning")
def data_check(directory, as_json, group_pattern):
    """Count images per class, size ranges, duplicates and unreadable files. Exits 1 on problems."""
    from .data import check_dataset

    report = check_dataset(directory, group_pattern=group_pattern)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        rows = [{"class": c, "files": v["files"], "readable": v["readable"],
                 "min WxH": "x".join(map(str, v["min_size"])) if v["min_size"] else "-",
                 "max WxH": "x".join(map(str, v["max_size"])) if v["max_size"] else "-"}
                for c, v in report["per_class"].items()]
        click.echo(format_table(rows))
        for bad in report["unreadable"]:
            click.echo(f"unreadable: {bad['error']}")
        for group in report["duplicates"]:
            click.echo(f"duplicates: {' == '.join(group)}")
        for problem in report["problems"]:
            click.echo(f"problem: {problem}", err=True)
        for warning in report["warnings"]:
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"{report['n_files']} files, {len(report['unreadable'])} unreadable, "
                   f"{len(report['duplicates'])} duplicate groups: {'OK' if report['ok'] else 'NOT OK'}")
    if not report["ok"]:
        sys.exit(1)


@data.command("split")
@click.argument("directory", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(), help="split file (CSV) to write")
@click.option("--val", type=float, default=0.15, show_default=True, callback=_in_range("data.val"))
@click.option("--test", type=float, default=0.2, show_default=True, callback=_in_range("data.test"))
@click.option("--group-pattern", default=None, help=_GROUP_PATTERN_HELP)
@click.option("--seed", type=int, default=0, show_default=True, callback=_in_range("seed"))
def data_split(directory, out, val, test, group_pattern, seed):
    """Write a stratified train/val/test split file (CSV: path,label,split,group,sha256,status)."""
    from .data import manifest_path, split_dataset, summarize_split, write_manifest

    manifest_path(out)  # checked before the folder is read
    rows = split_dataset(directory, val=val, test=test, seed=seed, group_pattern=group_pattern)
    write_manifest(rows, out)
    summary = summarize_split(rows)
    labels = sorted({r["label"] for r in rows})
    table = [{"split": s, **{lab: summary.get(s, {}).get(lab, 0) for lab in labels},
              "groups": len({r["group"] for r in rows if r["split"] == s})}
             for s in ("train", "val", "test", "excluded") if s in summary]
    click.echo(format_table(table))
    click.echo(f"split file -> {out}")


# ------------------------------------------------------------------------------------ backbones
@main.command("backbones")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="show parameters, MACs and TF-MOT support (recorded in the registry; no model is built)")
@click.option("--json", "as_json", is_flag=True)
def backbones(measure, as_json):
    """List the registered backbones, one line each, name first."""
    from .models import describe_backbones
    from .optimize import backbone_support

    rows = [{**r, **backbone_support(r["name"])} for r in describe_backbones()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    cols = ["name", "family", "default_size", "min_size", "weights", "source"]
    if measure:
        cols[4:4] = ["params", "macs", "prunable", "qat"]
        for r in rows:
            r["params"] = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "-"
            r["macs"] = f"{r['macs'] / 1e6:.0f}M" if r.get("macs") else "-"
    click.echo(format_table(rows, cols))


# ---------------------------------------------------------------------------------------- train
def _load_cfg(config, sets, extra=None):
    from .config import load_config, parse_overrides

    overrides = parse_overrides(sets)
    if extra:
        from .config import _merge

        overrides = _merge(overrides, extra)
    return load_config(config, overrides)


@main.command("train")
@click.option("--data", "data_dir", type=click.Path(), help="ImageFolder (split into the split file RUN_DIR/manifest.csv)")
@click.option("--split-file", "--manifest", "manifest", type=click.Path(),
              help="a split file from 'gram-tf data split' (--manifest: its old name)")
@click.option("--group-pattern", default=None, help="with --data: " + _GROUP_PATTERN_HELP + " (data.group_pattern)")
@click.option("--backbone", required=True, help="a name from 'gram-tf backbones'")
@click.option("--weights", default=None, help="imagenet | none | path to a weights file")
@click.option("--weights-dir", default=None, type=click.Path(),
              help="folder holding Keras ImageNet weight files (also GRAM_TF_WEIGHTS_DIR)")
@click.option("--input-size", type=int, default=None)
@click.option("--epochs", type=int, default=None)
@click.option("--out", "out", required=True, type=click.Path(), help="run directory")
@click.option("--config", type=click.Path(), default=None, help="YAML config (its train/data sections)")
@click.option("--set", "sets", multiple=True, help="override a config key, e.g. train.unfreeze=0.3")
def train_cmd(data_dir, manifest, group_pattern, backbone, weights, weights_dir, input_size, epochs, out, config,
              sets):
    """Train a classifier head on a frozen backbone (optionally fine-tune part of it)."""
    if bool(data_dir) == bool(manifest):
        raise GramTFError("pass exactly one of --data DIR or --split-file CSV")
    if manifest and group_pattern is not None:
        raise GramTFError("--group-pattern splits a --data folder; a --split-file is already split")
    extra = {"train": {k: v for k, v in {"weights": weights, "input_size": input_size,
                                         "epochs": epochs}.items() if v is not None}}
    if group_pattern is not None:
        extra["data"] = {"group_pattern": group_pattern}
    if weights_dir:
        extra["weights_dir"] = weights_dir
    cfg = _load_cfg(config, sets, extra)
    from .data import split_dataset, write_manifest
    from .io_utils import require_dir
    from .models import get_backbone, resolve_weights
    from .train import train

    # checked before anything is written: a typo leaves no split file behind
    bb = get_backbone(backbone)
    resolve_weights(bb, cfg.train.weights if cfg.train.weights != "imagenet" else "none", cfg.weights_dir)
    out = require_dir(out, "the run directory (--out)")
    if data_dir:  # split as `gram-tf run` does (data.group_pattern, else by specimen for a synthetic folder)
        manifest = out / "manifest.csv"
        rows = split_dataset(data_dir, cfg.data.val, cfg.data.test, cfg.seed, cfg.data.group_pattern)
        write_manifest(rows, manifest)
    run = train(manifest, backbone, out, cfg.train, seed=cfg.seed, weights_dir=cfg.weights_dir)
    rows = [{"split": s, **m} for s, m in run["metrics"].items()]
    click.echo(format_table(rows, ["split", *SUMMARY]))
    t = run["timing"]
    click.echo(f"{backbone} @ {run['input_size']}px, weights {Path(run['weights']).name}: "
               f"{t['total_s']:.1f}s total -> {out}")


# ---------------------------------------------------------------------------------------- prune
@main.command("prune")
@click.argument("run_dir", type=click.Path())
@click.option("--final-sparsity", type=float, default=None, help="target sparsity, e.g. 0.5")
@click.option("--sweep", "sweep", callback=_csv_list(float), default=None,
              help="several levels in one call, e.g. 0.1,0.2,...,0.9 (the study's sweep)")
@click.option("--max-drop-pp", type=float, default=None, callback=_in_range("prune.max_drop_pp"),
              help="validation accuracy allowed to be lost, in percentage points (1 = 1 pp): pick the sparsest "
                   "level of the sweep within it")
@_deprecated("--max-drop", "--max-drop-pp", "prune.max_drop_pp")
@click.option("--sensitivity", is_flag=True,
              help="measure each layer pruned alone (table + RUN_DIR/sensitivity.png); prunes only if levels are given")
@click.option("--allocation", type=click.Choice(_CHOICES["prune.allocation"]), default=None,
              help="per-layer sparsity: the same everywhere, or from the sensitivity measurement")
@click.option("--method", type=click.Choice(_CHOICES["prune.method"]), default=None,
              help="refit: one-shot masks + least-squares refit, then fine-tune; gradual: TF-MOT's ramp")
@click.option("--schedule", type=click.Choice(_CHOICES["prune.schedule"]), default=None)
@click.option("--epochs", type=int, default=None)
@click.option("--scope", type=click.Choice(_CHOICES["prune.scope"]), default=None)
@click.option("--structured-2-4", "structured", is_flag=True, default=None, help="2:4 structured sparsity")
@click.option("--frequency", type=int, default=None, help="pruning step frequency (default: automatic)")
@click.option("--config", type=click.Path(), default=None)
@click.option("--set", "sets", multiple=True)
def prune_cmd(run_dir, final_sparsity, sweep, max_drop_pp, deprecated_max_drop_pp, sensitivity, allocation, method,
              schedule, epochs, scope, structured, frequency, config, sets):
    """Prune a trained run (TF-MOT masks; BatchNorm folded, refit, distilled) and fine-tune it."""
    max_drop = _either(max_drop_pp, deprecated_max_drop_pp, "--max-drop-pp", "--max-drop")
    levels = sweep or ([final_sparsity] if final_sparsity is not None else None)
    extra = {"prune": {k: v for k, v in {"levels": levels, "schedule": schedule, "epochs": epochs,
                                         "scope": scope, "structured_2_4": structured, "method": method,
                                         "frequency": frequency, "allocation": allocation,
                                         "max_drop_pp": max_drop}.items() if v is not None}}
    cfg = _load_cfg(config, sets, extra)
    from .optimize import prune_run, run_sensitivity, sensitivity_table

    if sensitivity:
        sens = run_sensitivity(run_dir, cfg.prune)
        click.echo(format_table(sensitivity_table(sens)))
        click.echo(f"baseline {sens['split']} loss {sens['baseline']['loss']:.3f}, accuracy "
                   f"{sens['baseline']['accuracy']:.3f} ({sens['n_images']} images); "
                   f"plot -> {Path(run_dir) / 'sensitivity.png'}")
        if levels is None and max_drop is None:
            return
    results = prune_run(run_dir, cfg.prune, seed=cfg.seed)
    click.echo(format_table(results, ["sparsity_target", "sparsity", "pruned_layers", "val_accuracy",
                                      "accuracy", "zip_bytes", "out_dir"]
                            + (["chosen"] if cfg.prune.max_drop_pp is not None else [])))
    if cfg.prune.max_drop_pp is not None:
        chosen = next((r for r in results if r.get("chosen")), None)
        click.echo(f"within {cfg.prune.max_drop_pp:g} pp of the dense model's validation accuracy: "
                   + (f"{chosen['out_dir']} ({chosen['sparsity_target']:.0%})" if chosen else "no level; "
                      "lower the sparsity levels or raise --max-drop-pp")
                   + f" -> {Path(run_dir) / 'pruning_choice.json'}")


# -------------------------------------------------------------------------------------- convert
@main.command("convert")
@click.argument("run_dir", type=click.Path())
@click.option("--variants", cls=_TableHelp, callback=_csv_list(str), default=None, help=_variants_help)
@click.option("--out", "out", type=click.Path(), default=None,
              help="artifact folder (default tflite_models/<run-name>)")
@click.option("--io-type", type=click.Choice(_CHOICES["convert.io_type"]), default=None,
              help=f"input/output type of the full-integer variants (default {ConvertConfig.io_type})")
@click.option("--representative-samples", type=int, default=None)
@click.option("--equalize", type=click.Choice(_CHOICES["convert.equalize"]), default=None,
              help="cross-layer equalization before full-integer conversion (auto: per-tensor int8 and pruned runs)")
@click.option("--bias-correction", type=click.Choice(_CHOICES["convert.bias_correction"]), default=None,
              help="absorb int8 weight rounding's mean shift into the biases (auto: per-tensor int8 and pruned runs)")
@click.option("--calibration", cls=_TableHelp, type=click.Choice(_CHOICES["convert.calibration"]), default=None,
              help=_calibration_help)
@click.option("--calibration-percentile", type=float, default=None, help="percentile calibration's quantile",
              callback=_in_range("convert.calibration_percentile"))
@click.option("--pixel-input/--normalized-input", "pixel_input", default=None,
              help="pixel input (the default): normalization inside the graph, the model takes RGB pixels 0-255 "
                   "(uint8 for integer variants), as MediaPipe and the Task Library feed it; normalized: the caller "
                   "normalizes (the artifacts of gram_tf before pixel input)")
@click.option("--config", type=click.Path(), default=None)
@click.option("--set", "sets", multiple=True)
def convert_cmd(run_dir, variants, out, io_type, representative_samples, equalize, bias_correction, calibration,
                calibration_percentile, pixel_input, config, sets):
    """Convert a run (or a pruned run) to .tflite variants, each checked against Keras."""
    extra = {"convert": {k: v for k, v in {"variants": variants, "io_type": io_type, "pixel_input": pixel_input,
                                           "representative_samples": representative_samples,
                                           "equalize": equalize, "bias_correction": bias_correction,
                                           "calibration": calibration,
                                           "calibration_percentile": calibration_percentile}.items()
                         if v is not None}}
    cfg = _load_cfg(config, sets, extra)
    from .convert import convert_run

    manifest = convert_run(run_dir, cfg.convert.variants, out_dir=out, cfg=cfg.convert,
                           seed=cfg.seed)
    rows = [{**a, "int8_recipe": (a.get("int8_recipe") or {}).get("tag", "")} for a in manifest["artifacts"]]
    click.echo(format_table(rows, ["file", "variant", "int8_recipe", "size_bytes", "zip_bytes",
                                   "sparsity", "seconds", "top1_agreement", "max_abs_diff", "flagged"]))
    click.echo(f"artifact manifest -> {manifest['manifest_path']}")


# ---------------------------------------------------------------------------------------- bench
class _DefaultGroup(_Group):
    """A group whose first argument may be a sub-command or the arguments of its default one
    (`gram-tf bench PATHS...` is `gram-tf bench run PATHS...`)."""

    default_command = "run"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def _noise_guard(fn):
    """The noise guard's limits (bench.max_noise_pct, bench.max_busy_cores): `bench` warns, `report` marks."""
    fn = click.option("--max-busy-cores", type=float, default=BenchConfig.max_busy_cores, show_default=True,
                      callback=_in_range("bench.max_busy_cores"),
                      help="latencies are unreliable when other processes kept more cores busy while timing")(fn)
    return click.option("--max-noise", type=float, default=BenchConfig.max_noise_pct, show_default=True,
                        callback=_in_range("bench.max_noise_pct"),
                        help="latencies are unreliable above this fp32 round-to-round spread (%)")(fn)


@main.group("bench", cls=_DefaultGroup)
def bench_group():
    """Time .tflite files on this machine (`bench PATHS`, i.e. `bench run`) or import device logs."""


@bench_group.command("run")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--threads", callback=_csv_list(int, "bench.threads"), default="1", show_default=True)
@click.option("--rounds", type=int, default=BenchConfig.rounds, show_default=True, callback=_in_range("bench.rounds"),
              help="rounds; each times every model and thread count once, in a rotated order")
@click.option("--runs", type=int, default=BenchConfig.runs, show_default=True, callback=_in_range("bench.runs"),
              help="timed runs per round")
@click.option("--warmup", type=int, default=BenchConfig.warmup, show_default=True, callback=_in_range("bench.warmup"))
@click.option("--max-seconds", type=float, default=None, help="time budget per model and thread count (all rounds)",
              callback=_in_range("bench.max_seconds"))
@_noise_guard
@click.option("--out", "out", type=click.Path(), default="results.csv", show_default=True,
              help="results CSV (a .json twin is written beside it)")
@click.option("--no-eval", is_flag=True, help="time only; skip the test-split evaluation")
@click.option("--no-keras", is_flag=True, help="skip the Keras float reference row")
@click.option("--device", default=None, help="label of this machine in the rows (default: its CPU model)")
@click.option("--check-official", is_flag=True,
              help="also time each file with LiteRT's official Python benchmark tool and report official/ours")
@click.option("--no-verify", is_flag=True,
              help="skip the check of each file's sha256 against its artifact manifest or sidecar")
@click.option("--external", "external", multiple=True, metavar="NAME=DIR",
              help="also evaluate every model on this ImageFolder (an external test set: another lab, microscope "
                   "or stain batch; the model's class names); repeatable")
def bench_cmd(paths, threads, rounds, runs, warmup, max_seconds, max_noise, max_busy_cores, out, no_eval, no_keras,
              device, check_official, no_verify, external):
    """Time .tflite files with LiteRT (batch 1) in interleaved rounds and evaluate them on the test split of
    their run's split file (and on each --external set)."""
    from .bench import bench_paths, discover
    from .bench.litert import parse_external
    from .report import SUMMARY_COLUMNS, write_results
    from .report.schema import in_domain
    from .report.stats import noise_warning

    rows = bench_paths(paths, threads=threads, rounds=rounds, runs=runs, warmup=warmup, max_seconds=max_seconds,
                       evaluate=not no_eval, keras_reference=not no_keras, device=device, verify=not no_verify,
                       external=parse_external(external))
    csv_path, json_path = write_results(rows, out)
    click.echo(format_table([r for r in rows if in_domain(r)], SUMMARY_COLUMNS))
    ext = [r for r in rows if not in_domain(r)]
    if ext:
        click.echo(format_table(ext, ["dataset", "backbone", "sparsity_target", "variant", "runtime", "accuracy",
                                      "n_test"]))
    click.echo(f"results -> {csv_path} and {json_path}")
    warn = noise_warning(rows, max_noise, max_busy_cores)
    if warn:
        click.echo(f"warning: {warn}", err=True)
    if check_official:
        from .bench.official import check_official
        from .io_utils import atomic_write_json

        checked = check_official(discover(paths), threads, runs * rounds, warmup)
        official_path = atomic_write_json(Path(csv_path).with_suffix(".official.json"), checked)
        click.echo(format_table(checked))
        click.echo(f"official check -> {official_path}")


@bench_group.command("import")
@click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--device", required=True, help="the device the logs come from, e.g. 'Galaxy S10'")
@click.option("--models", "models_dir", required=True, type=click.Path(file_okay=False),
              help="the artifact folder (with its artifact manifest, manifest.json) the device ran")
@click.option("--threads", type=int, default=None, help="threads, for logs that do not say",
              callback=_in_range(_DEVICE_THREADS))
@click.option("--out", "out", type=click.Path(), default="device_results.csv", show_default=True)
@click.option("--no-eval", is_flag=True, help="skip the local evaluation (no accuracy columns)")
def bench_import_cmd(logs, device, models_dir, threads, out, no_eval):
    """Turn benchmark_model / benchmark_litert_model logs from a phone or board into result rows."""
    from .bench.importer import import_logs
    from .report import SUMMARY_COLUMNS, write_results

    rows = import_logs(logs, models_dir, device, threads=threads, evaluate=not no_eval)
    csv_path, json_path = write_results(rows, out)
    click.echo(format_table(rows, ["device", *SUMMARY_COLUMNS[:-1]]))
    click.echo(f"results -> {csv_path} and {json_path}  (merge with others: gram-tf report A.csv B.csv --out DIR)")


@main.command("profile")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--threads", type=int, default=1, show_default=True, callback=_in_range("bench.threads"))
@click.option("--runs", type=int, default=20, show_default=True, help="timed runs per op",
              callback=_in_range("bench.runs"))
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None,
              help="also write the per-op rows (index, op, dtype, delegated, isolated_ms, macs)")
def profile_cmd(model, threads, runs, csv_out):
    """Where a .tflite's time goes: XNNPACK partitions, fallback ops, per-op-type time (LiteRT only)."""
    from .deploy.profile import delegation, format_fallback, op_profile, summarize, whole_model_ms

    d = delegation(model, threads)
    rows = op_profile(model, threads=threads, runs=runs, progress=True)
    table = summarize(rows, whole_model_ms(model, threads))
    click.echo(f"{Path(model).name}: {d['nodes']} nodes, {d['delegated_nodes']} in XNNPACK, "
               f"{d['partitions']} partition(s); builtin fallbacks: {format_fallback(d)}")
    click.echo(format_table(table))  # summarize's columns, in its order
    if csv_out:
        from .report import write_results

        write_results(rows, csv_out, columns=list(rows[0]) if rows else ["index"])
        click.echo(f"per-op rows -> {csv_out}")


@main.command("peak")
@click.option("--threads", callback=_csv_list(int, "bench.threads"), default="1,2", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def peak_cmd(threads, as_json):
    """Measure this CPU's fp32 and int8 GMAC/s peak with the LiteRT/XNNPACK GEMM micro-benchmark."""
    from .bench import measure_peak

    peak = measure_peak(threads)
    if as_json:
        click.echo(json.dumps(peak, indent=1))
        return
    rows = [{"dtype": k.split("@")[0], "threads": int(k.split("@")[1]), "measured_gmacs_per_s": v,
             "isa_estimate": peak["theoretical"][k.split("@")[1]][f"{k.split('@')[0]}_gmacs"]}
            for k, v in peak["peak"].items()]
    click.echo(f"{peak['cpu']['cpu']} ({', '.join(peak['cpu']['flags'])}); {peak['method']}")
    click.echo(format_table(rows))


# --------------------------------------------------------------------------------------- report
@main.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(file_okay=False))
@click.option("--max-drop-pp", type=float, default=ReportConfig.max_drop_pp, show_default=True,
              callback=_in_range("report.max_drop_pp"),
              help="accuracy allowed to be lost vs fp32 for the 'auto' choice, in percentage points (1 = 1 pp)")
@_deprecated("--max-drop", "--max-drop-pp", "report.max_drop_pp")
@_noise_guard
@click.option("--selective-target", type=float, default=ReportConfig.selective_target,
              callback=_in_range("report.selective_target"),
              help="accuracy (a fraction) whose coverage the selective-prediction section states per artifact "
                   "[default: the dense fp32 model's in-domain accuracy]")
@click.option("--auto-on", type=click.Choice(_CHOICES["report.auto_on"]), default=ReportConfig.auto_on,
              show_default=True, help="the sets on which 'auto' must stay within --max-drop-pp: the test split, "
              "every external test set, or worst (both; the test split alone without external sets)")
def report_cmd(results, out, max_drop_pp, deprecated_max_drop_pp, max_noise, max_busy_cores, selective_target, auto_on):
    """Markdown report + plots from one or more results files."""
    from .report import build_report, load_results

    if deprecated_max_drop_pp is not None:  # --max-drop-pp has a default: the old spelling, when given, wins
        max_drop_pp = deprecated_max_drop_pp
    rows = load_results(results)
    made = build_report(rows, out, max_drop=max_drop_pp / 100, max_noise_pct=max_noise,  # the library takes a fraction
                        max_busy_cores=max_busy_cores, selective_target=selective_target, auto_on=auto_on)
    auto = made.get("auto") or {}
    table = [{"backbone": k if isinstance(k, str) else "/".join(map(str, k)),
              "auto": f"{r.get('variant')} (sparsity {r.get('sparsity_target')})",
              "accuracy": r.get("accuracy"), "p50 ms": r.get("latency_ms_p50")}
             for k, r in auto.items()]
    if table:
        click.echo(format_table(table))
    click.echo(f"report -> {made['report']}")


# ------------------------------------------------------------------------------------------ run
@main.command("run")
@click.argument("config", type=click.Path())
@click.option("--out", "out", type=click.Path(), default=None, help="override the config's out folder")
@click.option("--set", "sets", multiple=True, help="override a config key, e.g. backbones=[resnet50]")
@click.option("--executor", type=click.Choice(EXECUTORS), default=EXECUTORS[0], show_default=True,
              help="who runs the stage tasks: this process, one after the other, or Ray tasks on a cluster "
                   "(pip install 'gram-tf[ray]'; docs/cluster.md)")
@click.option("--address", default=None, help="with --executor ray: the Ray cluster to join (e.g. 10.0.0.1:6379 or "
                                              "auto); without it a local Ray instance is started")
def run_cmd(config, out, sets, executor, address):
    """Run the whole study from one YAML: data -> split -> train -> prune -> convert -> bench -> report."""
    cfg = _load_cfg(config, sets, {"out": out} if out else None)
    from .pipeline import run_study
    from .report import SUMMARY_COLUMNS

    result = run_study(cfg, progress=True, executor=executor, address=address)
    click.echo(format_table(result["rows"], SUMMARY_COLUMNS))
    click.echo(f"report -> {result['report']}")


# -------------------------------------------------------------------------------------- predict
@main.command("inspect")
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print everything as one JSON object")
def inspect_cmd(model, as_json):
    """What a .tflite holds: tensor types and quantization, preprocessing, labels, both metadata entries
    (gram_tf's and the standard TFLITE_METADATA), packed files, sha256 (LiteRT only, no TensorFlow)."""
    from .deploy.inspect import describe, format_description

    info = describe(model)
    click.echo(json.dumps(info, indent=2) if as_json else format_description(info))


@main.command("predict")
@click.argument("model", type=click.Path())
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--info", is_flag=True, help="describe MODEL instead of classifying (same as 'gram-tf inspect')")
@click.option("--top-k", type=int, default=1, show_default=True, callback=_in_range(_TOP_K))
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="write rows as they come to FILE.csv or FILE.jsonl (a whole slide folder: bounded memory)")
@click.option("--resume", is_flag=True, help="continue an interrupted --out file: skip the images already in it")
@click.option("--threads", type=int, default=None, help="LiteRT threads", callback=_in_range("bench.threads"))
@click.option("--workers", type=int, default=None, help="decode threads (default: one per core)",
              callback=_in_range(_WORKERS))
@click.option("--labels", default=None, help="labels file or comma list, for a model without metadata")
@click.option("--size", type=int, default=None, help="input size, for a model without metadata",
              callback=_in_range("train.input_size"))
@click.option("--no-verify", is_flag=True,
              help="skip the check of the file's sha256 against its artifact manifest or sidecar")
@click.option("--no-temperature", is_flag=True,
              help="show the model's own scores, not those after the temperature in its metadata (same labels)")
@click.option("--min-confidence", type=float, default=None, callback=_in_range(_SCORE), metavar="P",
              help=f"label images whose top score is below P '{REFER}' (selective prediction; the report "
                   "gives the coverage each P keeps)")
def predict_cmd(model, paths, info, top_k, as_json, as_csv, out, resume, threads, workers, labels, size, no_verify,
                no_temperature, min_confidence):
    """Classify images with a .tflite using LiteRT only (no TensorFlow needed)."""
    from . import deploy

    if info:
        from .deploy.inspect import describe, format_description

        described = describe(model)
        click.echo(json.dumps(described, indent=2) if as_json else format_description(described))
        return
    if not paths:
        raise GramTFError("predict needs image files or folders after MODEL (or --info to describe MODEL)")

    if top_k < 1:
        raise GramTFError(f"--top-k must be 1 or more, got {top_k}")
    if sum(map(bool, (as_json, as_csv, out))) > 1:
        raise GramTFError("choose one of --json, --csv or --out")
    if resume and not out:
        raise GramTFError("--resume continues an --out file; pass --out FILE.csv or FILE.jsonl")
    if labels and Path(labels).is_file():
        labels = [line.strip() for line in Path(labels).read_text().splitlines() if line.strip()]
    elif labels:
        labels = [s.strip() for s in labels.split(",") if s.strip()]
    clf = deploy.Classifier(model, threads=threads, labels=labels, input_size=size, verify=not no_verify,
                            temperature=not no_temperature, min_confidence=min_confidence)
    files = deploy.find_images(paths)
    if out:
        summary = deploy.predict_to_file(clf, files, out, top_k=top_k, resume=resume, workers=workers)
        click.echo(format_table([summary]), err=True)
        click.echo(f"rows -> {out}", err=True)
        if not summary["classified"] and not summary["already_done"]:
            sys.exit(1)
        return
    results, errors = [], []
    for row in clf.predict_stream(files, top_k, workers):
        (errors if "error" in row else results).append(row)
    if as_json:
        click.echo(deploy.to_json(results, errors))
    elif as_csv:
        click.echo(deploy.to_csv(results, top_k), nl=False)
    else:
        click.echo(deploy.format_predictions(results, top_k))
    for e in errors:
        click.echo(f"skipped: {e['error']}", err=True)
    if not as_json and not as_csv:
        referred = sum(bool(r.get("referred")) for r in results)
        click.echo(f"{len(results)} classified, {len(errors)} skipped"
                   + (f", {referred} referred to a human (top score < {min_confidence:g})"
                      if min_confidence is not None else ""), err=True)
    if not results:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
