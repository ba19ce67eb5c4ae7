"""One study on a two-node Ray cluster vs `local`: wall time of the whole study, and the DAG's critical path.

    python benchmarks/ray_cluster.py [--config CONFIG] [--nodes 2] [--name ray_cluster]

Starts NODES Ray nodes on this machine (`ray start --block`, one CPU each, each offering the bench
resource), runs the same study twice in fresh folders, `gram-tf run CONFIG` and `gram-tf run CONFIG
--executor ray --address ADDR`, stops the nodes it started, and writes RESULTS/NAME.csv/.json: a row
per executor (wall time of the whole study), then a row per stage of each run (node, seconds). From
the local run's stage times (each stage alone on the machine) it computes the DAG's total work and
critical path: total / critical is the most any number of nodes could speed the study up.
Minutes of CPU: run it on an otherwise idle machine. docs/cluster.md discusses the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_results  # noqa: E402

NAME = "ray_cluster"
# two backbones, a pruning level and four variants: a DAG with parallel branches that takes minutes
GRID = {
    "name": "grid", "seed": 0, "backbones": ["mobilenet_v2_035", "mobilenet_v1_025"],
    "data": {"synth_per_class": 40, "synth_size": 96},
    "train": {"input_size": 64, "weights": "none", "epochs": 6, "tensorboard": False},
    "prune": {"levels": [0.5], "epochs": 1},
    "convert": {"variants": ["fp32", "dynamic", "int8", "int8-per-tensor"], "pruned_variants": ["fp32", "int8"],
                "representative_samples": 32},
    "bench": {"threads": [1], "rounds": 3, "runs": 5, "warmup": 2, "keras_reference": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(nodes: int, tmp: Path, env: dict) -> tuple[str, list]:
    """NODES `ray start --block` processes (the first the head), one CPU and one bench slot each; returns
    the address and the processes (stopping them stops their nodes)."""
    from gram_tf.pipeline import BENCH_RESOURCE

    port = free_port()
    address = f"127.0.0.1:{port}"
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus", "1",
               "--resources", json.dumps({BENCH_RESOURCE: 1}), "--node-ip-address", "127.0.0.1"]
    procs = []
    for i in range(nodes):
        # each node its own ports: two raylets on one machine must not collide
        ports = ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                 "--metrics-export-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                 "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
        where = ["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(tmp / "ray")] \
            if i == 0 else ["--address", address]
        log = open(tmp / f"node{i}.log", "w")
        procs.append(subprocess.Popen([*ray_cli, *where, *ports], stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True))
        if i == 0:
            wait_for_nodes(address, 1, procs, env)
    wait_for_nodes(address, nodes, procs, env)
    return address, procs


def wait_for_nodes(address: str, n: int, procs: list, env: dict, timeout: float = 120) -> None:
    code = (f"import ray, time\nray.init(address={address!r}, logging_level='ERROR')\n"
            f"while sum(x['Alive'] for x in ray.nodes()) < {n}: time.sleep(0.5)\n")
    deadline = time.monotonic() + timeout
    while True:  # the head's GCS takes seconds to answer
        done = subprocess.run([sys.executable, "-c", code], timeout=timeout, capture_output=True, text=True, env=env)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop_cluster(procs)
            raise SystemExit(f"error: the Ray cluster at {address} did not reach {n} nodes: "
                             f"{done.stderr.strip().splitlines()[-1:]}")
        time.sleep(2)


def stop_cluster(procs: list) -> None:
    for p in reversed(procs):  # SIGTERM: `ray start --block` stops the processes of its node
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def run_study(config: Path, out: Path, env: dict, *extra) -> float:
    command = [sys.executable, "-m", "gram_tf.cli", "run", str(config), "--out", str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env)
    if proc.returncode:
        raise SystemExit(f"error: `{' '.join(command)}` exited with {proc.returncode}; results unchanged")
    return time.perf_counter() - start


def stage_times(study: Path) -> dict:
    """stage -> (node, seconds) of every stage this run ran (its record in stages/)."""
    out = {}
    for path in sorted((study / "stages").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("started") and rec.get("finished"):
            out[path.stem] = (rec.get("node"), rec["finished"] - rec["started"])
    return out


def critical_path(tasks, seconds: dict) -> tuple[float, list]:
    """The longest chain of the DAG (tasks in a topological order) weighted by `seconds`; (length, names)."""
    finish, via = {}, {}
    for t in tasks:
        before = max(t.deps, key=lambda d: finish[d], default=None)
        finish[t.name] = seconds.get(t.name, 0.0) + (finish[before] if before else 0.0)
        via[t.name] = before
    end = max(finish, key=finish.get)
    chain = [end]
    while via[chain[-1]]:
        chain.append(via[chain[-1]])
    return finish[end], chain[::-1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="a study config (default: the two-backbone grid in this script)")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--name", default=NAME)
    args = ap.parse_args(argv)
    import yaml

    from gram_tf.config import load_config
    from gram_tf.pipeline import plan

    # Ray 2.5x clusters started by `ray start` require a token (~/.ray/auth_token) from every client
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gram_tf_ray_") as tmp:
        tmp = Path(tmp)
        config = Path(args.config) if args.config else tmp / "grid.yaml"
        if not args.config:
            config.write_text(yaml.safe_dump(GRID, sort_keys=False))
        cfg = load_config(config)
        # each run in its own folders: the second must not find the first's stages done
        walls = {"local": run_study(config, tmp / "local", env, "--set", f"tflite_dir={tmp / 'tfl_local'}")}
        address, procs = start_cluster(args.nodes, tmp, env)
        try:
            walls["ray"] = run_study(config, tmp / "ray", env, "--set", f"tflite_dir={tmp / 'tfl_ray'}",
                                     "--executor", "ray", "--address", address)
        finally:
            stop_cluster(procs)
        times = {ex: stage_times(tmp / ex / cfg.name) for ex in walls}
    tasks = plan(cfg)
    work = sum(s for _, s in times["local"].values())
    crit, chain = critical_path(tasks, {k: s for k, (_, s) in times["local"].items()})
    # the same on the Ray run's own stage times (one thread per task, other tasks beside it)
    ray_crit, ray_chain = critical_path(tasks, {k: s for k, (_, s) in times["ray"].items()})
    summary = {"tasks": len(tasks), "total_work_s": round(work, 1), "critical_path_s": round(crit, 1),
               "critical_path": " -> ".join(chain), "max_speedup": round(work / crit, 2) if crit else None,
               "ray_total_work_s": round(sum(s for _, s in times["ray"].values()), 1),
               "ray_critical_path_s": round(ray_crit, 1), "ray_critical_path": " -> ".join(ray_chain)}
    rows = [{"kind": "study", "executor": ex, "stage": "", "node": f"{args.nodes} nodes x 1 CPU" if ex == "ray" else
             "this machine", "seconds": round(s, 1)} for ex, s in walls.items()]
    rows += [{"kind": "stage", "executor": ex, "stage": name, "node": node, "seconds": round(s, 1)}
             for ex, stages in times.items() for name, (node, s) in stages.items()]
    # the load average says whether other processes shared the cores during the runs
    write_results(args.name, rows, environment_extra={**summary, "wall_s": {k: round(v, 1) for k, v in walls.items()},
                                                      "nodes": args.nodes, "config": str(args.config or "GRID"),
                                                      "load_before": load_before, "load_after": os.getloadavg()})
    print(f"local {walls['local']:.0f} s, ray on {args.nodes} nodes {walls['ray']:.0f} s; total work {work:.0f} s, "
          f"critical path {crit:.0f} s ({summary['critical_path']}): at most {summary['max_speedup']}x on many nodes")


if __name__ == "__main__":
    main()
