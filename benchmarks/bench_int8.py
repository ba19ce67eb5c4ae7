"""Does int8 pay off on this CPU? LiteRT variants vs ONNX Runtime, with a roofline, in one run.

Per backbone (224 px, batch 1): a random-weight backbone with BatchNorm re-estimated on synthetic
micrographs and a linear head trained on them (so accuracy is measurable without a download), then
fp32 / int8 / int8-per-tensor / int8-fast / dynamic with LiteRT (XNNPACK), and, with the `peers`
extra installed, ONNX Runtime fp32 and static int8 (QDQ, per-channel, u8 x s8). Every row gets
accuracy on held-out synthetic images, XNNPACK partitions and fallback ops, achieved GMAC/s and
its fraction of this CPU's measured peak. All models of a backbone (both runtimes) are timed in
interleaved rounds in one process, so drift of the shared CPU hits every variant alike. The
targets of the issue are checked at the end.

    python benchmarks/bench_int8.py [--backbones a,b|all] [--threads 1,2] [--rounds 5] [--no-peers]
Writes benchmarks/results/int8.{csv,json}, int8.peak.json, int8.targets.json, int8.fast.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, export_artifact  # noqa: E402

import gram_tf  # noqa: E402,F401
from gram_tf.metrics import within_drop  # noqa: E402

DEFAULT_BACKBONES = "mobilenet_v2_100,resnet50,efficientnet_lite0,mobilenet_v3_small,deit_tiny"
DEFAULT_VARIANTS = "fp32,int8,int8-per-tensor,int8-fast,dynamic"
SPEEDUP_TARGET = {"mobilenet_v2_100": 1.3, "resnet50": 1.3, "efficientnet_lite0": 1.3}
COLUMNS = ["backbone", "runtime", "variant", "threads", "accuracy", "size_bytes", "latency_ms_p50",
           "images_per_s", "speedup_vs_fp32", "gmacs_per_s", "frac_of_peak", "partitions"]


def synthetic(n: int, size: int, seed: int):
    import numpy as np

    from gram_tf.data import render_micrograph

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = np.stack([np.asarray(render_micrograph(rng, "positive" if c else "negative", size)) for c in y])
    return x, y


def trained_model(name: str, size: int, x, y, seed: int):
    """Random backbone + BN re-estimated on the images + a head fitted once on frozen features."""
    import tf_keras

    from gram_tf.data import make_dataset
    from gram_tf.models import build_classifier, feature_extractor
    from gram_tf.train import recalibrate_batchnorm

    tf_keras.utils.set_random_seed(seed)
    model, info = build_classifier(name, 2, size, weights="none", dropout=0.0)
    pre = info["preprocessing"]
    recalibrate_batchnorm(model, x, pre)
    feats = feature_extractor(model).predict(make_dataset(x, None, pre, 32), verbose=0)
    probe = tf_keras.Sequential([tf_keras.Input(feats.shape[1:]), tf_keras.layers.Dense(2, activation="softmax")])
    probe.compile(tf_keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    probe.fit(feats, tf_keras.utils.to_categorical(y, 2), epochs=100, batch_size=32, verbose=0)
    model.layers[-1].set_weights(probe.layers[-1].get_weights())
    return model, info


def accuracy_of(path, x, y, size, pre) -> float:
    import numpy as np

    from gram_tf.deploy import Classifier

    clf = Classifier(path, threads=2, labels=["gram_negative", "gram_positive"], input_size=size, preprocessing=pre)
    return float(np.mean(clf.predict_arrays(x).argmax(1) == y))


def make_runner(runtime: str, path, threads: int, image, pre):
    """A zero-argument callable that runs one inference of `path` on `image` (batch 1)."""
    import numpy as np

    from gram_tf.convert import normalized_images

    if runtime == "onnxruntime":
        from gram_tf.bench.peers import session

        sess = session(path, threads)
        feed = {sess.get_inputs()[0].name: normalized_images(image, pre)}
        return lambda: sess.run(None, feed)
    from gram_tf.deploy import make_interpreter

    interp = make_interpreter(path, threads)
    d = interp.get_input_details()[0]
    x = normalized_images(image, pre)
    if np.dtype(d["dtype"]) != np.float32:  # quantize like the deployment runtime does
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    interp.set_tensor(d["index"], x.astype(d["dtype"]))
    return interp.invoke


def check_targets(rows: list[dict], threads: int) -> list[dict]:
    """The issue's targets, each with the measured values and pass/fail."""
    out = []
    at = [r for r in rows if r["threads"] == threads]
    for name in sorted({r["backbone"] for r in at}):
        mine = [r for r in at if r["backbone"] == name]
        fp32 = next(r for r in mine if r["variant"] == "fp32" and r["runtime"] == "litert")
        lite_int8 = [r for r in mine if r["runtime"] == "litert" and "int8" in r["variant"]
                     and within_drop(fp32["accuracy"], r["accuracy"], 0.01)]
        best_int8 = max(lite_int8, key=lambda r: r["images_per_s"], default=None)
        want = SPEEDUP_TARGET.get(name, 1.0)
        got = best_int8["images_per_s"] / fp32["images_per_s"] if best_int8 else 0.0
        out.append({"backbone": name, "target": f"accurate int8 >= {want}x fp32",
                    "measured": f"{got:.2f}x ({best_int8['variant'] if best_int8 else 'none'})",
                    "met": got >= want})
        ok = [r for r in mine if r["runtime"] == "litert" and within_drop(fp32["accuracy"], r["accuracy"], 0.01)]
        best = max(ok, key=lambda r: r["images_per_s"])
        if name.startswith("deit_tiny"):
            out.append({"backbone": name, "target": "fastest within 1 pp >= 100 img/s",
                        "measured": f"{best['images_per_s']:.1f} img/s ({best['variant']})",
                        "met": best["images_per_s"] >= 100})
        ort = [r for r in mine if r["runtime"] == "onnxruntime" and within_drop(fp32["accuracy"], r["accuracy"], 0.01)]
        if ort:
            best_ort = max(ort, key=lambda r: r["images_per_s"])
            out.append({"backbone": name, "target": "TFLite best >= ONNX Runtime best",
                        "measured": f"{best['images_per_s']:.1f} ({best['variant']}) vs "
                                    f"{best_ort['images_per_s']:.1f} ({best_ort['variant']}) img/s",
                        "met": best["images_per_s"] >= best_ort["images_per_s"]})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default=DEFAULT_BACKBONES, help="comma list, or 'all' (every registered one)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--target-threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--train", type=int, default=160, help="synthetic training images")
    ap.add_argument("--test", type=int, default=200, help="synthetic test images")
    ap.add_argument("--val", type=int, default=200, help="synthetic validation images (int8-fast's accuracy guard)")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per model per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of interleaved timing")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--fast-runs", type=int, default=15, help="int8-fast: timed runs per op in its profile")
    ap.add_argument("--calibration", type=int, default=32, help="representative images for int8")
    ap.add_argument("--skip", default="", help="comma list of backbones to leave out (with --backbones all)")
    ap.add_argument("--no-peers", action="store_true", help="skip ONNX Runtime even if installed")
    ap.add_argument("--name", default="int8")
    args = ap.parse_args(argv)

    import numpy as np
    import tf_keras

    from gram_tf.deploy import time_interleaved
    from gram_tf.convert import normalized_images
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.models import count_macs
    from gram_tf.deploy.profile import delegation, format_fallback
    from gram_tf.bench import measure_peak

    threads = [int(t) for t in args.threads.split(",")]
    if args.backbones == "all":
        from gram_tf.models import list_backbones

        skip = set(args.skip.split(","))
        args.backbones = ",".join(b.name for b in list_backbones() if b.name not in skip)
    peers = not args.no_peers
    if peers:
        from gram_tf.bench import peers as peers_mod
        from gram_tf.errors import GramTFError

        try:
            peers_mod.require_peers()
        except GramTFError as exc:  # the extra is not installed: say so and go on without it
            print(f"ONNX Runtime peers skipped: {exc}")
            peers = False
    t_start = time.time()
    peak = measure_peak(threads)
    if peers:  # the same GEMM in ONNX Runtime: its kernels' ceiling beside XNNPACK's
        peak["onnxruntime"] = peers_mod.measure_peak_onnx(threads)
        print("ONNX Runtime peak GMAC/s:", peak["onnxruntime"]["peak"])
    print("measured peak GMAC/s:", peak["peak"], "| ISA estimate:", peak["theoretical"])
    x_train, y_train = synthetic(args.train, args.size, 1)
    x_test, y_test = synthetic(args.test, args.size, 2)
    validation = synthetic(args.val, args.size, 3) if args.val else None
    # rows are saved after every backbone; a rerun with the same --name resumes after the last one
    partial = RESULTS / f"{args.name}.partial.json"
    saved = json.loads(partial.read_text()) if partial.is_file() else {}
    rows, fast_reports = saved.get("rows", []), saved.get("fast", {})
    done = {r["backbone"] for r in rows}
    if done:
        print(f"resuming {partial.name}: {len(done)} backbone(s) already measured")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.backbones.split(","):
            if name in done:
                continue
            model, info = trained_model(name, args.size, x_train, y_train, 0)
            pre, macs = info["preprocessing"], count_macs(model)
            out = tmp / name
            out.mkdir()
            for variant in args.variants.split(","):
                t0 = time.time()
                export_artifact(model, out, name, variant, args.size, pre, x_train[: args.calibration],
                                ["gram_negative", "gram_positive"], macs,
                                options={"threads": args.target_threads, "runs": args.fast_runs},
                                validation=validation)
                print(f"converted {name} {variant} in {time.time() - t0:.0f} s", flush=True)
            models = {}  # (runtime, variant) -> (path, accuracy)
            for variant in args.variants.split(","):
                path = out / f"{name}__{variant}.tflite"
                models[("litert", variant)] = (path, accuracy_of(path, x_test, y_test, args.size, pre))
            if peers:
                onnx_fp32 = peers_mod.export_onnx(model, args.size, out / f"{name}__ort-fp32.onnx")
                onnx_int8 = peers_mod.quantize_onnx(onnx_fp32, out / f"{name}__ort-int8.onnx",
                                                    normalized_images(x_train[: args.calibration], pre))
                x_eval = normalized_images(x_test, pre)
                for variant, path in (("ort-fp32", onnx_fp32), ("ort-int8", onnx_int8)):
                    sess = peers_mod.session(path, 2)
                    feed = sess.get_inputs()[0].name
                    preds = [sess.run(None, {feed: x_eval[i : i + 1]})[0].argmax() for i in range(len(x_eval))]
                    models[("onnxruntime", variant)] = (path, float((np.asarray(preds) == y_test).mean()))
            for t in threads:
                runners = {key: make_runner(key[0], path, t, x_test[:1], pre) for key, (path, _) in models.items()}
                timed = time_interleaved(runners, rounds=args.rounds, runs=args.runs, warmup=args.warmup)
                for (runtime, variant), (path, acc) in models.items():
                    row = {"run": name, "backbone": name, "variant": variant, "runtime": runtime, "threads": t,
                           "path": str(path), "size_bytes": path.stat().st_size, "accuracy": acc,
                           "n_test": len(y_test), "macs": macs, "input_size": args.size,
                           **timed[(runtime, variant)]}
                    if runtime == "litert":
                        d = delegation(path, t)
                        row["partitions"], row["fallback_ops"] = d["partitions"], format_fallback(d)
                        fast = json.loads(Path(str(path) + ".json").read_text())["artifact"].get("fast")
                        if fast:  # which int8-fast candidate won, with how many float ops
                            row["fast_choice"] = f"{fast['chosen']} ({len(fast['float_nodes'])} float)"
                            fast_reports[name] = fast
                    rows.append(row)
                del runners
            tf_keras.backend.clear_session()
            atomic_write_json(partial, {"rows": rows, "fast": fast_reports})
            write_outputs(rows, fast_reports, peak, args, t_start, final=False)
    write_outputs(rows, fast_reports, peak, args, t_start, final=True)
    partial.unlink(missing_ok=True)


def write_outputs(raw_rows: list[dict], fast_reports: dict, peak: dict, args, t_start: float, final: bool):
    """CSV/JSON, peak, targets, int8-fast reports and environment for the backbones measured so far
    (written after every backbone, so a long sweep stopped early still leaves readable results)."""
    from gram_tf.report import ROW_COLUMNS, add_relative_columns, write_results
    from gram_tf.io_utils import atomic_write_json
    from gram_tf.bench import add_roofline_columns
    from gram_tf.table import format_table

    rows = [dict(r, path=Path(r["path"]).name) for r in raw_rows]
    add_relative_columns(rows)
    add_roofline_columns(rows, peak)
    columns = ROW_COLUMNS + ["round_p50_min", "round_p50_max", "peak_gmacs_per_s", "frac_of_peak", "partitions",
                             "fallback_ops", "fast_choice"]
    targets = check_targets(rows, args.target_threads)
    if final:
        print(format_table(rows, COLUMNS))
        print(format_table(targets, ["backbone", "target", "measured", "met"]))
    csv_path, _ = write_results(rows, RESULTS / f"{args.name}.csv", columns=columns)
    atomic_write_json(RESULTS / f"{args.name}.peak.json", peak)
    atomic_write_json(RESULTS / f"{args.name}.targets.json", targets)
    if fast_reports:  # per backbone: int8-fast's candidates, their ms and accuracy, float ops and why
        atomic_write_json(RESULTS / f"{args.name}.fast.json", fast_reports)
    atomic_write_json(RESULTS / f"{args.name}.env.json", {**environment(), "complete": final,
                                                          "options": vars(args),
                                                          "backbones": sorted({r["backbone"] for r in rows}),
                                                          "seconds": round(time.time() - t_start)})
    print(f"-> {csv_path} ({len(rows)} rows, {time.time() - t_start:.0f} s)", flush=True)

if __name__ == "__main__":
    main()
