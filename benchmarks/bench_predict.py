"""Prediction over a folder (a slide's tiles): end-to-end images/s against its two bounds, measured
in the same run, interleaved: decode-only (all cores) and inference-only (threads as given); the
old serial decode path beside them; batch-8 models; peak memory at two folder sizes; a SIGKILL +
--resume check; and the agreement of draft-mode JPEG decoding with the exact path on real images.

    python benchmarks/bench_predict.py                 # 696 synthetic 500x500 PNG tiles, ~5 min
    python benchmarks/bench_predict.py --folder DIR    # your own tiles

Writes benchmarks/results/predict.json (+ .env.json with the command, date and machine).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, SHARED_WEIGHTS, environment  # noqa: E402

import gram_tf  # noqa: E402,F401

SHARED_REAL = ROOT.parent / "shared" / "data" / "real"
LABELS = ["gram_negative", "gram_positive"]


def make_tiles(out: Path, n: int, size: int) -> None:
    """n synthetic Gram-stain tiles (PNG, size x size), the format of a slide's tile export."""
    from gram_tf.data import synthesize_dataset

    synthesize_dataset(out, (n + 1) // 2, size=size, seed=0, progress=True)


def export_models(out: Path, size: int, n_rep: int = 32) -> dict:
    """MobileNetV2-0.35 (ImageNet weights when ../shared has them) as fp32 and int8 .tflite,
    batch 1 and batch 8."""
    import numpy as np

    from gram_tf.convert import export_artifact
    from gram_tf.data import render_micrograph
    from gram_tf.models import build_classifier

    weights = "imagenet" if SHARED_WEIGHTS.is_dir() else "none"
    model, info = build_classifier("mobilenet_v2_035", 2, size, weights=weights,
                                   weights_dir=str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_dir() else None)
    rng = np.random.default_rng(0)
    rep = np.stack([render_micrograph(rng, LABELS[i % 2], size) for i in range(n_rep)])
    paths = {}
    for variant in ("fp32", "int8"):
        for batch in (1, 8):
            path = out / f"mnv2_035__{variant}__b{batch}.tflite"
            export_artifact(model, path, variant, size=size, preprocessing=info["preprocessing"], labels=LABELS,
                            backbone="mobilenet_v2_035", representative=rep, io_type="int8", batch_size=batch)
            paths[(variant, batch)] = path
    return paths


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def throughput(files, models: dict, threads: int, workers: int, rounds: int) -> dict:
    """Images/s of each way of running, rounds interleaved (this VM drifts 20-30 % over minutes)."""
    import numpy as np

    from gram_tf.deploy import Classifier, decode_stream

    n = len(files)
    clfs = {k: Classifier(p, threads=threads) for k, p in models.items()}
    size = next(iter(clfs.values())).input_size
    images = np.stack([d.image for d in decode_stream(files[:64], size)])
    reps = max(1, n // len(images))

    def infer_only(clf):
        for _ in range(reps):
            clf.predict_arrays(images)

    ways = {
        f"decode-only ({workers} threads)": (lambda: sum(1 for _ in decode_stream(files, size, workers=workers)), n),
        "decode-only (1 thread)": (lambda: sum(1 for _ in decode_stream(files, size, workers=1)), n),
    }
    for (variant, batch), clf in clfs.items():
        ways[f"inference-only {variant} b{batch}"] = (lambda c=clf: infer_only(c), reps * len(images))
        ways[f"end-to-end {variant} b{batch}"] = (lambda c=clf: sum(1 for _ in c.predict_stream(files, workers=workers)), n)
        if batch == 1:
            ways[f"end-to-end {variant} b1, serial decode (before)"] = (
                lambda c=clf: sum(1 for _ in c.predict_stream(files, workers=1)), n)
    samples = {k: [] for k in ways}
    for r in range(rounds):
        for key, (fn, count) in ways.items():
            samples[key].append(count / timed(fn))
            print(f"round {r + 1}/{rounds} {key}: {samples[key][-1]:.1f} img/s", flush=True)
    return {k: {"images_per_s": float(np.median(v)), "rounds": [round(x, 1) for x in v]} for k, v in samples.items()}


def peak_memory(model: Path, folder: Path, n_links: int, tmp: Path) -> dict:
    """Peak RSS of `gram-tf predict --out` over a folder of n hard-linked tiles (a child process)."""
    src = sorted(p for p in folder.rglob("*.png"))[:50]
    big = tmp / f"links_{n_links}"
    big.mkdir()
    for i in range(n_links):
        os.link(src[i % len(src)], big / f"t{i:06d}.png")
    out = tmp / f"rows_{n_links}.csv"
    code = ("import resource, sys; from gram_tf.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('PEAK_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, "predict", str(model), str(big), "--out", str(out)],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak = float(res.stdout.split("PEAK_MB")[-1]) if "PEAK_MB" in res.stdout else None
    rows = out.read_text().count("\n") - 1
    shutil.rmtree(big)
    return {"images": n_links, "rows": rows, "peak_rss_mb": round(peak, 1) if peak else None,
            "seconds": round(seconds, 1)}


def kill_and_resume(model: Path, folder: Path, tmp: Path) -> dict:
    out = tmp / "killed.csv"
    cmd = [sys.executable, "-m", "gram_tf.cli", "predict", str(model), str(folder), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n = len(list(folder.rglob("*.png")))
    while proc.poll() is None:
        if out.is_file() and out.read_text().count("\n") > n // 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    before = out.read_text().count("\n") - 1
    subprocess.run(cmd + ["--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import csv

    paths = [r["path"] for r in csv.DictReader(open(out))]
    return {"killed": proc.returncode == -signal.SIGKILL, "rows_before_resume": before, "images": n,
            "rows_after_resume": len(paths), "unique_paths": len(set(paths)),
            "exactly_one_row_per_image": len(paths) == len(set(paths)) == n}


def draft_agreement(models: dict) -> dict:
    """Top-1 agreement and |dp| of the draft-mode path against the exact decode on the real images."""
    import numpy as np

    from gram_tf.deploy import Classifier, find_images
    from gram_tf.deploy.imaging import load_image, load_resized, resize_image

    if not SHARED_REAL.is_dir():
        return {"skipped": f"{SHARED_REAL} absent"}
    files = find_images([SHARED_REAL])
    out = {"images": len(files), "jpeg": sum(f.suffix.lower() in (".jpg", ".jpeg") for f in files)}
    for (variant, batch), path in models.items():
        if batch != 1:
            continue
        clf = Classifier(path, threads=2)
        size, mode = clf.input_size, clf.preprocessing["resize"]
        exact = np.stack([resize_image(load_image(f), size, mode) for f in files])
        fast = np.stack([load_resized(f, size, mode) for f in files])
        pe, pf = clf.predict_arrays(exact), clf.predict_arrays(fast)
        out[variant] = {"top1_agreement": float(np.mean(pe.argmax(1) == pf.argmax(1))),
                        "max_abs_dp": float(np.abs(pe - pf).max()), "mean_abs_dp": float(np.abs(pe - pf).mean()),
                        "pixel_mae": float(np.abs(exact.astype(int) - fast.astype(int)).mean())}
    t_exact = timed(lambda: [resize_image(load_image(f), 224, "squash") for f in files])
    t_fast = timed(lambda: [load_resized(f, 224, "squash") for f in files])
    out["decode_ms_per_image"] = {"exact": round(1e3 * t_exact / len(files), 1),
                                  "draft": round(1e3 * t_fast / len(files), 1)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=None, help="a folder of images (default: synthetic tiles)")
    ap.add_argument("--tiles", type=int, default=696)
    ap.add_argument("--tile-size", type=int, default=500)
    ap.add_argument("--size", type=int, default=224, help="model input size")
    ap.add_argument("--threads", type=int, default=2, help="LiteRT threads")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode threads")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory", default="1000,20000", help="folder sizes for the peak-memory check")
    ap.add_argument("--name", default="predict")
    args = ap.parse_args(argv)

    from gram_tf.deploy import find_images
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.table import format_table

    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = Path(args.folder) if args.folder else tmp / "tiles"
        if not args.folder:
            make_tiles(folder, args.tiles, args.tile_size)
        files = find_images([folder])
        models = export_models(tmp, args.size)
        result = {"folder": str(folder) if args.folder else f"{len(files)} synthetic {args.tile_size}px PNG tiles",
                  "images": len(files), "threads": args.threads, "workers": args.workers}
        result["throughput"] = throughput(files, models, args.threads, args.workers, args.rounds)
        result["draft_agreement"] = draft_agreement(models)
        result["kill_and_resume"] = kill_and_resume(models[("int8", 1)], folder, tmp)
        result["memory"] = [peak_memory(models[("int8", 1)], folder, int(n), tmp) for n in args.memory.split(",")]
    tp = result["throughput"]
    for variant in ("fp32", "int8"):
        bound = min(tp[f"decode-only ({args.workers} threads)"]["images_per_s"],
                    tp[f"inference-only {variant} b1"]["images_per_s"])
        result[f"{variant}_end_to_end_over_bound"] = round(tp[f"end-to-end {variant} b1"]["images_per_s"] / bound, 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{args.name}.json", result)
    atomic_write_json(RESULTS / f"{args.name}.env.json", {
        **environment(), "command": " ".join(["python", "benchmarks/bench_predict.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.time() - t_start), "options": vars(args)})
    print(format_table([{"way": k, "images_per_s": v["images_per_s"]} for k, v in tp.items()]))
    print(json.dumps({k: v for k, v in result.items() if k != "throughput"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
