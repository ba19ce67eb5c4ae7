"""The one schema of result rows: columns, their types, the reference rule, reading and writing.

`gram_tf.bench` writes rows with these columns, `gram_tf.report` reads them, `gram_tf.pipeline`
passes them on. A *model* is (run, backbone, sparsity_target, variant, runtime); its *reference*
is the dense fp32 LiteRT model of the same run and backbone (at the same thread count for
latency). No TensorFlow here.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from ..deploy.timing import paired_speedup, parse_rounds
from ..errors import GramTFError, one_line
from ..io_utils import atomic_write_json, atomic_write_text
from ..metrics import format_scores, parse_scores

# Every column and its type, in the canonical order the benchmark writes them: the column list and the
# type sets the reader converts with are both derived from this one table.
_DEVICE = [  # where the row was measured (gram_tf.bench.device.device_info writes these)
    ("device", str), ("cpu", str), ("cores", int), ("isa", str), ("os", str), ("arch", str),
    ("runtime_version", str),
]
_TABLE = [
    ("run", str), ("backbone", str), ("variant", str), ("runtime", str), ("sparsity_target", float),
    ("threads", int), ("path", str),
    ("size_bytes", int), ("gzip_bytes", int), ("zip_bytes", int), ("sparsity", float),
    ("weight_quantization", str), ("io_type", str),
    ("accuracy", float), ("loss", float), ("f1_macro", float), ("auc", float), ("n_test", int),
    # confidence calibration (gram_tf.metrics; `loss` is the NLL): before and after the run's temperature,
    # fitted on its validation split at convert time (docs/generalization.md)
    ("ece", float), ("ece_adaptive", float), ("brier", float),
    ("temperature", float), ("ece_ts", float), ("ece_adaptive_ts", float), ("brier_ts", float), ("nll_ts", float),
    ("latency_ms_mean", float), ("latency_ms_std", float), ("latency_ms_p50", float), ("latency_ms_p90", float),
    ("latency_ms_p99", float),
    ("first_ms", float), ("init_ms", float), ("images_per_s", float), ("peak_rss_mb", float), ("runs", int),
    # timing in rounds (gram_tf.deploy.timing): p50 is the median of the round medians, with its 95 % CI;
    # round_ms lists the round medians (';'-separated), spread_pct is their interquartile range / median
    ("rounds", int), ("latency_ms_ci_low", float), ("latency_ms_ci_high", float), ("round_ms", str),
    ("spread_pct", float),
    # speed-up: the median per-round ratio fp32 / model (paired), with its 95 % CI
    ("speedup_vs_fp32", float), ("speedup_ci_low", float), ("speedup_ci_high", float),
    ("size_ratio_vs_fp32", float), ("macs", int), ("gmacs_per_s", float),
    ("input_size", int),
    ("flagged", bool), ("correct", str),  # correct: one '0'/'1' per test image
    # per-image top scores, ';'-joined (gram_tf.metrics.format_scores), before and after the temperature:
    # the selective-prediction curve and the reliability diagram are drawn from them at report time
    ("confidence", str), ("confidence_ts", str),
    *_DEVICE,
    # where its numbers come from
    ("timing_source", str), ("accuracy_source", str),
    # the machine's timing noise during this benchmark: the fp32 reference's spread_pct (add_noise_columns)
    ("noise_pct", float),
    # CPU other processes kept busy while this row was timed, in cores (gram_tf.bench.device.NeighbourMeter)
    ("busy_cores", float),
    # what the full-integer variants got on their way to int8 (gram_tf.convert.recipe tag, e.g. cle+bc)
    ("int8_recipe", str),
    # the images the accuracy columns are measured on: the in-domain split (test; val when the test split is
    # empty; empty in old rows) or an external test set's name, whose rows carry no timing (in_domain)
    ("dataset", str),
    ("predicted", str),  # each image's top-1 class index, ';'-separated, in the order of `correct`
]
COLUMNS = [c for c, _ in _TABLE]
ROW_COLUMNS = COLUMNS
DEVICE_COLUMNS = [c for c, _ in _DEVICE]
# A file lacking any of these is rejected; other canonical columns that are absent become None.
REQUIRED_COLUMNS = [
    "run", "backbone", "variant", "runtime", "sparsity_target", "threads", "accuracy", "latency_ms_p50",
]
INT_COLUMNS = {c for c, t in _TABLE if t is int}
STR_COLUMNS = {c for c, t in _TABLE if t is str}
BOOL_COLUMNS = {c for c, t in _TABLE if t is bool}
FLOAT_COLUMNS = {c for c, t in _TABLE if t is float}
# What every command prints after a benchmark (a short view of the rows).
SUMMARY_COLUMNS = ["backbone", "sparsity_target", "variant", "threads", "accuracy", "size_bytes",
                   "zip_bytes", "latency_ms_p50", "images_per_s", "speedup_vs_fp32", "peak_rss_mb"]

# The reference row of a group: dense fp32 in LiteRT.
REFERENCE_VARIANT, REFERENCE_RUNTIME = "fp32", "litert"
# `dataset` of the rows measured on the study's own held-out split (bench/litert.py); any other name is an
# external test set
IN_DOMAIN_SETS = ("test", "val")


def in_domain(row) -> bool:
    """A row measured on the in-domain split (the timed rows; a row without `dataset` is an old one of them)."""
    return (row.get("dataset") or IN_DOMAIN_SETS[0]) in IN_DOMAIN_SETS


def external_name(row):
    """The external test set a row was measured on, or None for an in-domain row."""
    return None if in_domain(row) else str(row.get("dataset"))


def to_float(v) -> float | None:
    """Row value -> float, or None if missing / not a finite number."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def sparsity_of(row) -> float:
    s = to_float(row.get("sparsity_target"))
    return 0.0 if s is None else s


def devices_of(rows) -> list:
    """The distinct `device` labels of rows, in order of first appearance (None for old rows)."""
    return list(dict.fromkeys(r.get("device") for r in rows))


def threads_of(row):
    t = to_float(row.get("threads"))
    return None if t is None else int(t)


def is_reference(row) -> bool:
    """The dense fp32 LiteRT row: what speed-ups, size ratios and accuracy drops are measured against."""
    return (str(row.get("variant") or "") == REFERENCE_VARIANT and sparsity_of(row) == 0.0
            and str(row.get("runtime") or "") == REFERENCE_RUNTIME)


def reference_key(row) -> tuple:
    """(run, backbone, threads): the group whose reference row is this row's reference (rows of one
    device; `gram_tf.report` compares devices by splitting rows per `device` first)."""
    return (row.get("run"), row.get("backbone"), threads_of(row))


def reference_model_key(key: tuple) -> tuple:
    """The model key (run, backbone, sparsity, variant, runtime) of a model key's reference."""
    return (key[0], key[1], 0.0, REFERENCE_VARIANT, REFERENCE_RUNTIME)


def add_relative_columns(rows: list[dict]) -> None:
    """Speed-up and size ratio against the reference row of the same run/backbone/threads/device,
    and achieved GMAC/s. Call it on the rows of one benchmark only: rows timed in the same rounds
    (equal `round_ms` counts) get the paired speed-up with its CI, others the ratio of p50s."""
    ref = {(*reference_key(r), r.get("device")): r for r in rows if is_reference(r)}
    for r in rows:
        base = ref.get((*reference_key(r), r.get("device")))
        if base and r.get("latency_ms_p50"):
            a, b = parse_rounds(base.get("round_ms")), parse_rounds(r.get("round_ms"))
            if a is not None and b is not None and a.size == b.size:
                r["speedup_vs_fp32"], r["speedup_ci_low"], r["speedup_ci_high"] = paired_speedup(a, b)
            else:
                r["speedup_vs_fp32"] = base["latency_ms_p50"] / r["latency_ms_p50"]
            if r.get("size_bytes"):
                r["size_ratio_vs_fp32"] = r["size_bytes"] / base["size_bytes"]
        if r.get("macs") and r.get("latency_ms_p50"):
            r["gmacs_per_s"] = r["macs"] / (r["latency_ms_p50"] / 1000.0) / 1e9


def add_noise_columns(rows: list[dict]) -> None:
    """`noise_pct` of every row: the round-to-round spread of its group's fp32 reference (the same
    run, backbone, threads and device), or the median spread of the group's rows when it has none."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((*reference_key(r), r.get("device")), []).append(r)
    for grp in groups.values():
        refs = [to_float(r.get("spread_pct")) for r in grp if is_reference(r)]
        spreads = [x for x in refs if x is not None] or [
            x for x in (to_float(r.get("spread_pct")) for r in grp) if x is not None]
        noise = float(np.median(spreads)) if spreads else None
        for r in grp:
            r["noise_pct"] = noise


class _BadValue(ValueError):
    pass


SCORE_COLUMNS = ("confidence", "confidence_ts")  # per-image scores, checked by parse_scores on reading


def _to_number(col: str, v):
    """Convert one value of a numeric column; None for missing; raises _BadValue if not a number."""
    if v is None:
        return None
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, str):
        s = v.strip()
        if not s or s.lower() in {"none", "null", "nan", "n/a", "na"}:
            return None
        try:
            x = float(s)
        except ValueError:
            raise _BadValue(f"column {col!r} should be a number, got {v!r}") from None
    elif isinstance(v, (int, float, np.integer, np.floating)):
        x = float(v)
    else:
        raise _BadValue(f"column {col!r} should be a number, got {type(v).__name__}")
    if not math.isfinite(x):
        return None
    if col in INT_COLUMNS and x.is_integer():
        return int(x)
    return x


def _to_bool(col: str, v):
    if v is None or isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("", "none", "null", "nan"):
        return None
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise _BadValue(f"column {col!r} should be true or false, got {v!r}")


def _to_str(col: str, v, n_test=None):
    if v is None:
        return None
    if col == "correct" and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        # A JSON writer that let a 0/1 string become a number loses leading zeros; restore them.
        s = str(int(v))
        return s.zfill(int(n_test)) if n_test else s
    if col == "correct" and isinstance(v, (list, tuple)):
        return "".join("1" if bool(x) else "0" for x in v) or None
    if col in SCORE_COLUMNS and isinstance(v, (list, tuple, int, float)) and not isinstance(v, bool):
        return format_scores(v if isinstance(v, (list, tuple)) else [v])  # a JSON writer's list or one number
    s = str(v)
    if col == "correct":
        s = s.strip()
    return s if s.strip() else None


def normalize_row(row: dict) -> dict:
    """Typed copy of one result row: numbers converted, `correct` kept a string, empty -> None.

    Key order is preserved; canonical columns that are absent are appended with value None.
    Raises ValueError (with the column name) for a value that is not a number in a numeric column.
    """
    out = {}
    n_test = None
    try:
        n_test = _to_number("n_test", row.get("n_test"))
    except _BadValue:
        pass
    for k, v in row.items():
        if k is None:
            raise ValueError("the row has more fields than the header")
        k = str(k)
        if k in INT_COLUMNS or k in FLOAT_COLUMNS:
            out[k] = _to_number(k, v)
        elif k in STR_COLUMNS:
            out[k] = _to_str(k, v, n_test)
        elif k in BOOL_COLUMNS:
            out[k] = _to_bool(k, v)
        elif isinstance(v, str):
            out[k] = v if v.strip() else None
        else:
            out[k] = v
    for k in COLUMNS:
        out.setdefault(k, None)
    if out.get("correct") is not None and set(out["correct"]) - {"0", "1"}:
        raise ValueError(f"column 'correct' may only contain '0' and '1', got {out['correct'][:20]!r}")
    for col in SCORE_COLUMNS:
        try:
            parse_scores(out.get(col))
        except ValueError as e:
            raise ValueError(f"column {col!r}: {e}") from None
    if out.get("predicted") is not None and not _PREDICTED.fullmatch(out["predicted"]):
        raise ValueError(f"column 'predicted' holds ';'-separated class indices, got {out['predicted'][:20]!r}")
    return out


_PREDICTED = re.compile(r"\d+(;\d+)*")


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise GramTFError(f"{path}: empty results file (no CSV header); rerun the benchmark")
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise GramTFError(
                    f"{path}: missing required column(s) {', '.join(missing)}; "
                    f"expected a gram_tf benchmark results.csv"
                )
            raw = list(reader)
    except GramTFError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise GramTFError(f"{path}: cannot read results CSV ({one_line(e)})") from e
    rows = []
    for i, r in enumerate(raw, start=2):  # line 1 is the header
        try:
            rows.append(normalize_row(r))
        except ValueError as e:
            raise GramTFError(f"{path}: line {i}: {one_line(e)}") from e
    return rows


def _read_json(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise GramTFError(f"{path}: invalid JSON ({one_line(e)})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise GramTFError(f"{path}: cannot read results JSON ({one_line(e)})") from e
    if not isinstance(data, list):
        raise GramTFError(f"{path}: expected a JSON list of result rows, got {type(data).__name__}")
    rows = []
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise GramTFError(f"{path}: row {i} is {type(r).__name__}, expected an object")
        missing = [c for c in REQUIRED_COLUMNS if c not in r]
        if missing:
            raise GramTFError(f"{path}: row {i} is missing required column(s) {', '.join(missing)}")
        try:
            rows.append(normalize_row(r))
        except ValueError as e:
            raise GramTFError(f"{path}: row {i}: {one_line(e)}") from e
    return rows


def load_results(paths) -> list[dict]:
    """Load and merge result rows from results.csv / results.json files or directories holding them.

    paths: a list of str/Path (a single str/Path is accepted too). A directory is read through its
    results.json if present, else its results.csv (not both: they hold the same rows). A file is
    read by its suffix (.json, else CSV). Rows are typed by `normalize_row`; files are concatenated
    in the order given. Raises GramTFError (one line, naming the path) for a missing path, a
    directory with neither file, an unreadable or invalid file, or missing required columns.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows: list[dict] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            if (path / "results.json").is_file():
                path = path / "results.json"
            elif (path / "results.csv").is_file():
                path = path / "results.csv"
            else:
                raise GramTFError(f"{path}: directory has no results.json or results.csv; run the benchmark first")
        elif not path.exists():
            raise GramTFError(f"{path}: results file not found")
        if path.suffix.lower() == ".json":
            rows.extend(_read_json(path))
        else:
            rows.extend(_read_csv(path))
    return rows


def _columns_of(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    seen = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def _csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def write_results(rows: list[dict], out, columns=None, json_twin: bool = True):
    """Write rows to a CSV (atomically; columns as given, else in first-appearance order; None as
    empty) and, with `json_twin`, the same rows to a .json beside it. Returns (csv_path, json_path)."""
    cols = list(columns or _columns_of(rows))
    out = Path(out)
    csv_path = out if out.suffix == ".csv" else out.with_suffix(".csv")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_csv_cell(r.get(c)) for c in cols])
    atomic_write_text(csv_path, buf.getvalue())
    json_path = None
    if json_twin:
        json_path = atomic_write_json(csv_path.with_suffix(".json"), rows)
    return csv_path, json_path
