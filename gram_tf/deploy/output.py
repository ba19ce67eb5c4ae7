"""Output formats of `gram-tf predict`: a terminal table, CSV and JSON, and result files written
row by row (CSV / JSON Lines) that an interrupted run resumes."""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import GramTFError

def _top_columns(top_k: int) -> list[str]:
    cols = []
    for i in range(2, top_k + 1):
        cols += [f"top{i}_label", f"top{i}_prob"]
    return cols


def format_predictions(results: Sequence[dict], top_k: int = 1) -> str:
    """Plain-text table: path, label, prob and (top_k > 1) the runner-up labels."""
    if not results:
        return "(no images classified)"
    header = ["path", "label", "prob"]
    if top_k > 1:
        header.append(f"top {top_k}")
    rows = []
    for r in results:
        row = [r["path"], r["label"], f"{r['prob']:.4f}"]
        if top_k > 1:
            row.append(", ".join(f"{label} {p:.4f}" for label, p in r["top_k"][:top_k]))
        rows.append(row)
    widths = [max(len(str(x[i])) for x in [header] + rows) for i in range(len(header))]
    lines = []
    for i, row in enumerate([header] + rows):
        cells = [str(c).ljust(w) if j != 2 else str(c).rjust(w)
                 for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def to_csv(results: Sequence[dict], top_k: int = 1) -> str:
    """CSV: path,label,prob,[top2_label,top2_prob,...],prob_<label> for every label."""
    labels = list(results[0]["probs"]) if results else []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "prob"] + _top_columns(top_k)
                    + [f"prob_{label}" for label in labels])
    for r in results:
        row = [r["path"], r["label"], f"{r['prob']:.6f}"]
        for i in range(1, top_k):
            if i < len(r["top_k"]):
                row += [r["top_k"][i][0], f"{r['top_k'][i][1]:.6f}"]
            else:
                row += ["", ""]
        row += [f"{r['probs'].get(label, 0.0):.6f}" for label in labels]
        writer.writerow(row)
    return buf.getvalue()


def to_json(results: Iterable[dict], errors: Iterable[dict] = ()) -> str:
    return json.dumps({"results": list(results), "errors": list(errors)}, indent=2)


# ------------------------------------------------------------------------------ streaming files
class ResultFile:
    """Prediction rows written as they come (CSV or JSON Lines, by suffix), flushed every second or
    every 256 rows,
    resumable: each row records the file's size and mtime, and `--resume` skips the files whose row
    is already there with the same size and mtime. A line cut by a kill is dropped on resume.
    Every row names the model that made it (`model_sha256`): `--resume` with another model is refused,
    so one file never mixes two models' rows."""

    FLUSH_SECONDS = 1.0
    FLUSH_ROWS = 256  # a kill loses at most this many rows (they are redone on --resume)

    def __init__(self, path, labels: Sequence[str], top_k: int = 1, resume: bool = False, *, model_sha256: str):
        self.path = Path(path)
        self.labels = list(labels)
        self.top_k = top_k
        self.model_sha256 = model_sha256
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise GramTFError(f"{self.path}: --out must end in .csv or .jsonl")
        self.jsonl = suffix == ".jsonl"
        self.columns = (["path", "label", "prob"] + _top_columns(top_k) + [f"prob_{lab}" for lab in self.labels]
                        + ["error", "file_size", "file_mtime_ns", "model_sha256"])
        self.done: dict[str, tuple[int, int]] = {}
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and not resume:
            raise GramTFError(f"{self.path} exists: pass --resume to continue it, or remove it")
        if exists:
            exists = self._read_done()  # False when only a cut first line was there
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8", newline="")
        self._csv = csv.writer(self._fh, lineterminator="\n") if not self.jsonl else None
        if self._csv is not None and not exists:
            self._csv.writerow(self.columns)
        self._last_flush = time.monotonic()
        self._unflushed = 0
        self.written = 0

    def _read_done(self) -> bool:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]  # a line cut by a kill has no newline: drop it
        not_ours = "it was not written by gram-tf predict --out, or was damaged; write to a new --out file"
        try:
            text = complete.decode("utf-8")
            if self.jsonl:
                rows = []
                for n, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except (ValueError, RecursionError):
                            raise GramTFError(f"{self.path}: line {n} is not a JSON row; {not_ours}") from None
            else:
                reader = csv.DictReader(io.StringIO(text))
                if reader.fieldnames and list(reader.fieldnames) != self.columns:
                    raise GramTFError(f"{self.path}: its columns ({', '.join(reader.fieldnames[:6])}...) are not "
                                      "this model's; write to a new --out file")
                rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise GramTFError(f"{self.path}: unreadable ({type(exc).__name__}); {not_ours}") from None
        for n, r in enumerate(rows, 1):
            try:
                self.done[str(r["path"])] = (int(r["file_size"]), int(r["file_mtime_ns"]))
                model = r["model_sha256"]
            except (KeyError, TypeError, ValueError):
                raise GramTFError(f"{self.path}: row {n} lacks path/file_size/file_mtime_ns/model_sha256; "
                                  f"{not_ours}") from None
            if model != self.model_sha256:
                raise GramTFError(f"{self.path}: row {n} was made by another model (sha256 {str(model)[:12]}..., "
                                  f"this one is {self.model_sha256[:12]}...); write to a new --out file")
        if len(complete) != len(raw):  # only once the file is known to be ours
            with open(self.path, "r+b") as fh:
                fh.truncate(len(complete))
        return bool(complete)

    @staticmethod
    def stamp(path) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns

    def is_done(self, path) -> bool:
        prev = self.done.get(str(path))
        if prev is None:
            return False
        try:
            return prev == self.stamp(path)
        except OSError:
            return False

    def write(self, row: dict) -> None:
        try:
            size, mtime = self.stamp(row["path"])
        except OSError:
            size, mtime = -1, -1
        if self.jsonl:
            rec = {k: v for k, v in row.items() if k != "top_k" or self.top_k > 1}
            self._fh.write(json.dumps({**rec, "file_size": size, "file_mtime_ns": mtime,
                                       "model_sha256": self.model_sha256}) + "\n")
        else:
            self._csv.writerow(self._csv_row(row) + [row.get("error", ""), size, mtime, self.model_sha256])
        self.written += 1
        self._unflushed += 1
        if self._unflushed >= self.FLUSH_ROWS or time.monotonic() - self._last_flush >= self.FLUSH_SECONDS:
            self.flush()

    def _csv_row(self, r: dict) -> list:
        if "error" in r:
            return [r["path"], "", ""] + [""] * (2 * (self.top_k - 1)) + [""] * len(self.labels)
        row = [r["path"], r["label"], f"{r['prob']:.6f}"]
        for i in range(1, self.top_k):
            row += [r["top_k"][i][0], f"{r['top_k'][i][1]:.6f}"] if i < len(r["top_k"]) else ["", ""]
        return row + [f"{r['probs'].get(label, 0.0):.6f}" for label in self.labels]

    def flush(self) -> None:
        self._fh.flush()
        self._last_flush = time.monotonic()
        self._unflushed = 0

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
