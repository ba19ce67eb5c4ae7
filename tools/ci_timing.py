"""Write the test suite's timing record (`.ci/run` calls this when GRAM_TF_CI_TIMING names a file).

    python tools/ci_timing.py OUT.json --wall-s SECONDS --summary "619 passed in 557.10s (0:09:17)"
OUT.json = {"environment": {cpu, isa, cores, versions, command, date}, "rows": [{wall_s, summary,
passed, failed, skipped, errors}]}; tools/docs_tables.py turns benchmarks/results/ci.json into the
README's and docs/development.md's test time.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def counts(summary: str) -> dict:
    """pytest's final line -> {'passed': 619, 'skipped': 0, ...} (absent kinds are 0)."""
    found = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", summary)}
    found["errors"] = found.pop("error", 0) + found.pop("errors", 0)
    return {k: found.get(k, 0) for k in ("passed", "failed", "skipped", "errors")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--wall-s", type=float, required=True)
    ap.add_argument("--summary", required=True, help="pytest's final summary line")
    args = ap.parse_args(argv)
    from common import environment

    from gram_tf.io_utils import atomic_write_json

    summary = args.summary.strip(" =")
    env = {**environment(), "command": f"GRAM_TF_CI_TIMING={args.out} bash .ci/run"}
    atomic_write_json(args.out, {"environment": env,
                                 "rows": [{"wall_s": round(args.wall_s), "summary": summary, **counts(summary)}]})


if __name__ == "__main__":
    main()
