"""`gram-tf run` with the DeiT-tiny config, end to end at 32 px (its own file so the test scheduler
starts this long test early on one worker)."""
import json

import numpy as np
import pytest


def test_deit_study_end_to_end_prunes_attention_and_runs_int8(tmp_path):
    """`gram-tf run` with DeiT-tiny at 32 px: train, prune, int8 per-channel/per-tensor, LiteRT bench."""
    from ai_edge_litert.interpreter import Interpreter

    from gram_tf.config import load_config
    from gram_tf.pipeline import run_study
    from gram_tf.optimize import measure_sparsity
    from gram_tf.models import load_model

    cfg = load_config("configs/deit_tiny.yaml", [
        f"out={tmp_path / 'runs'}", f"tflite_dir={tmp_path / 'tfl'}", "data.synth_per_class=16", "data.synth_size=48",
        "train.input_size=32", "train.epochs=3", "prune.levels=[0.5]", "prune.epochs=1", "prune.batch_size=8",
        "prune.allocation=uniform", "prune.method=gradual",  # the refit recipe on DeiT: see docs/pruning.md
        "convert.variants=[int8,int8-per-tensor]", "convert.pruned_variants=[int8]",
        "convert.representative_samples=8", "convert.check_samples=8", "bench.threads=[1]", "bench.rounds=3", "bench.runs=2",
        "bench.warmup=1", "bench.keras_reference=false"])
    result = run_study(cfg, progress=False)
    variants = {(r["variant"], r["sparsity_target"]) for r in result["rows"]}
    assert variants == {("int8", 0.0), ("int8-per-tensor", 0.0), ("int8", 0.5)}
    pruned_dir = tmp_path / "runs" / cfg.name / "runs" / "deit_tiny" / "pruned_50"
    per_layer = measure_sparsity(load_model(pruned_dir / "model.keras"))["per_layer"]
    report = json.loads((pruned_dir / "sparsity_report.json").read_text())
    # every attention and MLP kernel is pruned to its target, and
    # the pruned layers together to the level asked for
    for i in range(12):
        for part in ("qkv", "proj", "fc1", "fc2"):
            target = report["per_layer_target"][f"block{i}_{part}"]
            assert per_layer[f"block{i}_{part}/kernel"]["sparsity"] == pytest.approx(target, abs=0.02)
    assert report["summary"]["pruned_layers_sparsity"] == pytest.approx(0.5, abs=0.01)
    for f in (tmp_path / "tfl" / cfg.name).glob("*int8*.tflite"):
        it = Interpreter(model_path=str(f))
        it.allocate_tensors()
        assert np.dtype(it.get_input_details()[0]["dtype"]) == np.uint8  # pixel input
