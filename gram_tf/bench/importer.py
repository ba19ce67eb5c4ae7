"""`gram-tf bench import`: benchmark logs from phones and boards -> result rows beside ours.

Each log is matched to an artifact of the models folder by file name (the model path in the log,
else the log's own name: `<artifact stem>[.anything].log`), and the local file is checked against
the manifest's sha256 (and the logged size, when the log has one), so the row describes the file
that ran on the device. Latency comes from the log; size and accuracy from this machine's evaluation
of the same file, and the row says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import GramTFError
from ..deploy import MANIFEST_NAME
from ..deploy.classifier import recorded_sha256
from ..io_utils import compressed_sizes, read_json, sha256_file
from ..report.schema import ROW_COLUMNS, add_relative_columns
from .litert import TestSet, add_metrics, artifact_info, base_row
from .logs import parse_log


def _artifacts(models_dir: Path) -> dict:
    manifest = models_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise GramTFError(f"{models_dir} has no manifest.json; pass the folder 'gram-tf convert' wrote (--models DIR)")
    try:
        entries = read_json(manifest).get("artifacts")
    except (ValueError, AttributeError, RecursionError):
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("file"), str) for e in entries):
        raise GramTFError(f"{manifest} is not a manifest of artifacts (JSON with a list \"artifacts\" of objects "
                          "naming their \"file\"); re-run 'gram-tf convert'")
    return {Path(e["file"]).stem: e for e in entries}


def _match(log: Path, logged_model: Optional[str], artifacts: dict) -> str:
    if logged_model:
        stem = Path(logged_model.replace("\\", "/")).stem
        if stem in artifacts:
            return stem
        raise GramTFError(f"{log}: the log ran {Path(logged_model).name}, which is not in the models folder's manifest")
    hits = [s for s in artifacts if log.name == s or log.name.startswith(s + ".")]
    if not hits:
        raise GramTFError(f"{log}: the log does not name its model; name the log after the artifact "
                          f"(<artifact stem>.log, e.g. {next(iter(artifacts), 'model')}.t4.log)")
    return max(hits, key=len)


def _check_size(log: Path, logged, local: Path) -> None:
    """The model the device ran is the artifact: the logged size within 1 % of the file's (or within
    the rounding of the printed figure, for a small model logged to two decimals)."""
    if logged is None:
        return
    actual = local.stat().st_size
    if abs(logged["bytes"] - actual) > max(0.01 * actual, logged["slack"]):
        raise GramTFError(f"{log}, line {logged['line']}: the device's model was {logged['shown']} "
                          f"({logged['bytes']:,.0f} bytes), {local} is {actual:,} bytes: not the same file; "
                          "benchmark the artifact itself")


def import_logs(logs, models_dir, device: str, threads: Optional[int] = None, evaluate: bool = True,
                run_name: Optional[str] = None) -> list[dict]:
    """Result rows (the report schema) for benchmark logs measured on `device`."""
    if not device:
        raise GramTFError("name the device the logs come from: --device NAME (e.g. 'Galaxy S10')")
    models_dir = Path(models_dir)
    artifacts = _artifacts(models_dir)
    testset, rows = TestSet(), []
    for log in map(Path, logs):
        parsed = parse_log(log)
        stem = _match(log, parsed["model"], artifacts)
        entry = artifacts[stem]
        local = models_dir / entry["file"]
        if not local.is_file():
            raise GramTFError(f"{log}: its model {entry['file']} is not in {models_dir}")
        recorded = recorded_sha256(local)
        if recorded and sha256_file(local) != recorded:
            raise GramTFError(f"{local}: sha256 differs from the manifest: not the artifact that was benchmarked")
        _check_size(log, parsed["model_size"], local)
        t = parsed["threads"] or threads
        if not t:
            raise GramTFError(f"{log}: the log does not say how many threads ran; pass --threads N")
        info = artifact_info(local)
        row = base_row(local, info, run_name)
        row.update(compressed_sizes(local))
        p50 = parsed["latency_ms_p50"]
        row.update(threads=int(t), runtime="litert", device=device, runtime_version=parsed["tool"],
                   latency_ms_mean=parsed["latency_ms_mean"], latency_ms_std=parsed["latency_ms_std"],
                   latency_ms_p50=p50 if p50 is not None else parsed["latency_ms_mean"],
                   first_ms=parsed["first_ms"], init_ms=parsed["init_ms"], runs=parsed["runs"],
                   images_per_s=1000.0 / (p50 or parsed["latency_ms_mean"]),
                   timing_source=f"{parsed['tool']}: {log.name}" + ("" if p50 is not None else " (p50 = mean: the log has no median)"),
                   accuracy_source="local evaluation of the same file (sha256 checked)")
        if evaluate and info.get("data_manifest"):
            add_metrics(row, testset.evaluate(local, info))  # verified above
            row["dataset"] = testset.split[str(info["data_manifest"])]
        rows.append(row)
    add_relative_columns(rows)
    return [{c: r.get(c) for c in ROW_COLUMNS} for r in rows]
