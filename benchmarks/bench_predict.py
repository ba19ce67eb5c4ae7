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


def export_models(out: Path, size: int, n_rep: int = 32, batches=(1, 8)) -> dict:
    """MobileNetV2-0.35 (ImageNet weights when ../shared has them) as fp32 and int8 .tflite, at each
    batch size of `batches`."""
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
        for batch in batches:
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
    # VmHWM, not ru_maxrss: a forked child inherits the parent's ru_maxrss (this process holds TF)
    code = ("import sys; from gram_tf.cli import main; from gram_tf.deploy import peak_rss_mb\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('PEAK_MB', peak_rss_mb())")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, "predict", str(model), str(big), "--out", str(out)],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak = float(res.stdout.split("PEAK_MB")[-1]) if "PEAK_MB" in res.stdout else None
    rows = out.read_text().count("\n") - 1
    shutil.rmtree(big)
    return {"images": n_links, "rows": rows, "peak_rss_mb": round(peak, 1) if peak else None,
            "seconds": round(seconds, 1)}


def kill_and_resume(model: Path, folder: Path, tmp: Path, n_links: int = 4000) -> dict:
    src = sorted(folder.rglob("*.png"))[:50]
    folder = tmp / "kill_links"
    folder.mkdir()
    for i in range(n_links):
        os.link(src[i % len(src)], folder / f"t{i:06d}.png")
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


def _head_fitted_artifacts(x_fit, y_fit, out: Path, size: int) -> dict:
    """MobileNetV2-0.35 (ImageNet weights when present) with a softmax head fitted on `x_fit`,
    exported fp32 and int8: a classifier that is confident on these images, unlike a random head."""
    import tf_keras

    from gram_tf.convert import export_artifact
    from gram_tf.data import make_dataset
    from gram_tf.models import HEAD_DENSE, build_classifier, feature_extractor

    weights = "imagenet" if SHARED_WEIGHTS.is_dir() else "none"
    model, info = build_classifier("mobilenet_v2_035", 2, size, weights=weights,
                                   weights_dir=str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_dir() else None)
    pre = info["preprocessing"]
    feats = feature_extractor(model).predict(make_dataset(x_fit, None, pre, 16), verbose=0)
    head = tf_keras.Sequential([tf_keras.Input(feats.shape[1:]), tf_keras.layers.Dense(2, activation="softmax")])
    head.compile(tf_keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    head.fit(feats, tf_keras.utils.to_categorical(y_fit, 2), epochs=200, batch_size=16, verbose=0)
    model.get_layer(HEAD_DENSE).set_weights(head.layers[-1].get_weights())
    paths = {}
    for variant in ("fp32", "int8"):
        paths[variant] = out / f"fitted__{variant}.tflite"
        export_artifact(model, paths[variant], variant, size=size, preprocessing=pre, labels=LABELS,
                        backbone="mobilenet_v2_035", representative=x_fit[:32], io_type="int8")
    return paths


def _agreement(files, fit_every: int, labels_of, tmp: Path, size: int = 224) -> dict:
    """Fit a head on every `fit_every`-th image (exact decoding), then compare exact vs draft-mode
    decoding on all images."""
    import numpy as np

    from gram_tf.deploy import Classifier
    from gram_tf.deploy.imaging import load_image, load_resized, resize_image

    exact = np.stack([resize_image(load_image(f), size, "squash") for f in files])
    fast = np.stack([load_resized(f, size, "squash") for f in files])
    y = np.array([labels_of(f) for f in files])
    fit = np.arange(len(files)) % fit_every == 0
    out = {"images": len(files), "head_fitted_on": int(fit.sum()),
           "pixel_mae": round(float(np.abs(exact.astype(int) - fast.astype(int)).mean()), 3)}
    for variant, path in _head_fitted_artifacts(exact[fit], y[fit], tmp, size).items():
        clf = Classifier(path, threads=2)
        pe, pf = clf.predict_arrays(exact), clf.predict_arrays(fast)
        out[variant] = {"top1_agreement": round(float(np.mean(pe.argmax(1) == pf.argmax(1))), 4),
                        "max_abs_dp": round(float(np.abs(pe - pf).max()), 4),
                        "mean_abs_dp": round(float(np.abs(pe - pf).mean()), 5),
                        "near_ties": int(np.sum(np.abs(pe[:, 1] - 0.5) < 0.02))}
    return out


def draft_agreement(tmp: Path, n_synthetic: int, size: int = 224, real: bool = True) -> dict:
    """Draft-mode JPEG decoding vs the exact path: on the real camera micrographs in ../shared (with
    `real`) and on large synthetic JPEGs, for a model of input `size`; plus the decode time of each path."""
    import numpy as np
    from PIL import Image

    from gram_tf.data import render_micrograph
    from gram_tf.deploy import find_images
    from gram_tf.deploy.imaging import load_image, load_resized, resize_image

    out = {}
    if real and SHARED_REAL.is_dir():
        photos = find_images([SHARED_REAL / "gramstainr_reference"])
        out["real_gramstainr"] = _agreement(photos, 2, lambda f: int(f.parent.name != "Escherichia_coli"), tmp, size)
        t_exact = timed(lambda: [resize_image(load_image(f), size, "squash") for f in photos])
        t_fast = timed(lambda: [load_resized(f, size, "squash") for f in photos])
        out["real_decode_ms_per_image"] = {"exact": round(1e3 * t_exact / len(photos), 1),
                                           "draft": round(1e3 * t_fast / len(photos), 1),
                                           "size": "3264x1840 JPEG"}
    else:
        out["real_gramstainr"] = {"skipped": f"{SHARED_REAL} absent" if real else "--no-real"}
    rng = np.random.default_rng(1)
    folder = tmp / "large_jpeg"
    folder.mkdir()
    for i in range(n_synthetic):
        img = render_micrograph(rng, LABELS[i % 2], 1024)
        Image.fromarray(np.asarray(img)).resize((1800, 1350)).save(folder / f"{LABELS[i % 2]}_{i:03d}.jpg", quality=90)
    synth = find_images([folder])
    out["synthetic_1800x1350_jpeg"] = _agreement(synth, 2, lambda f: int(f.name.startswith("gram_positive")), tmp,
                                                 size)
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
    ap.add_argument("--large-jpegs", type=int, default=120, help="synthetic 1800x1350 JPEGs for the draft check")
    ap.add_argument("--no-real", action="store_true", help="leave ../shared's real photos out of the draft check")
    ap.add_argument("--kill-images", type=int, default=4000, help="folder size for the SIGKILL + --resume check")
    ap.add_argument("--throughput-only", action="store_true")
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
        if not args.throughput_only:
            result["draft_agreement"] = draft_agreement(tmp, args.large_jpegs, args.size, real=not args.no_real)
            result["kill_and_resume"] = kill_and_resume(models[("int8", 1)], folder, tmp, args.kill_images)
            result["memory"] = [peak_memory(models[("int8", 1)], folder, int(n), tmp)
                                for n in args.memory.split(",")]
    tp = result["throughput"]
    for variant in ("fp32", "int8"):
        bound = min(tp[f"decode-only ({args.workers} threads)"]["images_per_s"],
                    tp[f"inference-only {variant} b1"]["images_per_s"])
        result[f"{variant}_end_to_end_over_bound"] = round(tp[f"end-to-end {variant} b1"]["images_per_s"] / bound, 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{args.name}.json", result)
    atomic_write_json(RESULTS / f"{args.name}.env.json", {
        **environment(), "seconds": round(time.time() - t_start), "options": vars(args)})
    print(format_table([{"way": k, "images_per_s": v["images_per_s"]} for k, v in tp.items()]))
    print(json.dumps({k: v for k, v in result.items() if k != "throughput"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
