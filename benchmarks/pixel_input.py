"""What pixel input costs: the same trained models converted with normalization outside the graph (the
caller normalizes; int8 input/output) and inside it (RGB pixels 0-255; uint8 input/output with scale 1,
what MediaPipe and the Task Library feed), compared on test accuracy, agreement with Keras and latency.

Two latencies, each timed in interleaved rounds in one process (deploy.time_interleaved), 1 and 2
threads: the interpreter's invoke alone (the model: pixel input adds the normalization ops), and
`Classifier.predict_arrays` on 16 decoded images per call, per image (what `gram-tf predict` spends after
decoding: the caller's normalize + quantize, which pixel input removes, plus the invoke).

    python benchmarks/pixel_input.py                        # real micrographs, real MobileNetV2-0.35 weights
    python benchmarks/pixel_input.py --quickstart runs/quickstart/runs/mobilenet_v2_035
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_WEIGHTS, require_real_weights, write_results  # noqa: E402

VARIANTS = "fp32,int8,int8-per-tensor"
MODES = {"normalized": dict(pixel_input=False, io_type="int8"), "pixels": dict(pixel_input=True, io_type="uint8")}


def real_run(work: Path, backbone: str) -> Path:
    import real_micrographs
    from gram_tf.config import TrainConfig
    from gram_tf.train import train

    manifest = real_micrographs.build(work / "real6")
    out = work / f"{backbone}_real"
    if not (out / "run.json").is_file():
        train(manifest, backbone, out, TrainConfig(input_size=224, weights="imagenet", tensorboard=False),
              seed=0, weights_dir=str(SHARED_WEIGHTS), progress=False)
    return out


def measure(run_dir: Path, name: str, work: Path, rounds: int, runs: int, variants=VARIANTS.split(","),
            threads_list=(1, 2)) -> list[dict]:
    import numpy as np

    from gram_tf import data as data_mod
    from gram_tf.config import ConvertConfig
    from gram_tf.convert import convert_run
    from gram_tf.deploy import Classifier, make_interpreter, time_interleaved
    from gram_tf.run import load_run

    run = load_run(run_dir)
    rows = data_mod.read_manifest(run["manifest"])
    x, y, _ = data_mod.load_split(rows, "test", run["input_size"], run["preprocessing"]["resize"], progress=False)
    arts = {}
    for mode, settings in MODES.items():
        manifest = convert_run(run_dir, list(variants), out_dir=work / f"{name}_{mode}", cfg=ConvertConfig(**settings),
                               progress=False, skip_existing=True)
        arts.update({(a["variant"], mode): a for a in manifest["artifacts"]})
    out = []
    for threads in threads_list:
        runners = {}
        for key, art in arts.items():
            interp = make_interpreter(art["path"], threads=threads)
            detail = interp.get_input_details()[0]
            interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            runners[key] = interp.invoke
        timing = time_interleaved(runners, rounds=rounds, runs=runs)
        batch = x[:16]
        classifiers = {key: Classifier(art["path"], threads=threads) for key, art in arts.items()}
        end_to_end = time_interleaved({key: (lambda c=c: c.predict_arrays(batch)) for key, c in classifiers.items()},
                                      rounds=rounds, runs=max(3, runs // 6))
        for (variant, mode), art in arts.items():
            probs = Classifier(art["path"], threads=threads).predict_arrays(x) if threads == threads_list[0] else None
            t = timing[(variant, mode)]
            out.append({"model": name, "backbone": run["backbone"], "input_size": run["input_size"],
                        "variant": variant, "input": mode, "io_type": art["io_type"],
                        "input_scale": art["io"]["input"]["scale"][0] if art["io"]["input"]["scale"] else None,
                        "threads": threads, "test_images": len(y),
                        "test_accuracy": round(float(np.mean(probs.argmax(1) == y)), 4) if probs is not None else None,
                        "keras_agreement": art["top1_agreement"], "size_bytes": art["size_bytes"],
                        "latency_ms_p50": round(t["latency_ms_p50"], 4),
                        "predict_ms_per_image": round(end_to_end[(variant, mode)]["latency_ms_p50"] / len(batch), 4),
                        "round_p50_min": round(t["round_p50_min"], 4), "round_p50_max": round(t["round_p50_max"], 4)})
    base = {(r["variant"], r["threads"]): r for r in out if r["input"] == "normalized"}
    for r in out:
        ref = base[(r["variant"], r["threads"])]
        r["latency_vs_normalized"] = round(r["latency_ms_p50"] / ref["latency_ms_p50"], 3)
        r["predict_vs_normalized"] = round(r["predict_ms_per_image"] / ref["predict_ms_per_image"], 3)
        if r["test_accuracy"] is not None:
            r["accuracy_delta_pp"] = round(100 * (r["test_accuracy"] - ref["test_accuracy"]), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quickstart", default=None, help="also measure this trained run (e.g. the quickstart's)")
    ap.add_argument("--backbone", default="mobilenet_v2_035")
    ap.add_argument("--no-real", action="store_true", help="skip the real-weights model")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--variants", default=VARIANTS)
    ap.add_argument("--threads", default="1,2", help="LiteRT threads; accuracy is measured at the first")
    ap.add_argument("--work", default="/tmp/pixel_input")
    ap.add_argument("--out", default="pixel_input")
    args = ap.parse_args()
    work = Path(args.work)
    rows = []
    how = dict(variants=args.variants.split(","), threads_list=tuple(int(t) for t in args.threads.split(",")))
    if args.quickstart:
        rows += measure(Path(args.quickstart), "quickstart", work, args.rounds, args.runs, **how)
    if not args.no_real:
        require_real_weights()
        rows += measure(real_run(work, args.backbone), f"{args.backbone}_real", work, args.rounds, args.runs, **how)
    if not rows:
        raise SystemExit("error: nothing to measure; pass --quickstart RUN_DIR or drop --no-real")
    from gram_tf.table import format_table

    print(format_table(rows, ["model", "variant", "input", "threads", "test_accuracy", "accuracy_delta_pp",
                              "latency_ms_p50", "latency_vs_normalized", "predict_ms_per_image",
                              "predict_vs_normalized", "keras_agreement"]))
    print(f"-> {write_results(args.out, rows)}")


if __name__ == "__main__":
    main()
