"""TF-MOT pruning: sparsity measured from the weights, registry-checked layers, schedules, 2:4."""
import json

import numpy as np
import pytest

from gram_tf.config import PruneConfig
from gram_tf.errors import GramTFError
from gram_tf.optimize import make_schedule, measure_sparsity, prunable_layer_report, prune_run
from gram_tf.models import load_model


def test_prune_reaches_target_and_reports_layers(pruned_run, tiny_run):
    out, res = pruned_run
    report = json.loads((out / "sparsity_report.json").read_text())
    model = load_model(out / "model.keras")
    measured = measure_sparsity(model)
    pruned = [k for k in measured["per_layer"] if k.split("/")[0] in report["pruned"]]
    assert pruned and all(abs(measured["per_layer"][k]["sparsity"] - 0.6) < 0.02 for k in pruned)
    skipped = {s["layer"]: s["reason"] for s in report["skipped"]}
    assert any("depthwise" in r.lower() for r in skipped.values())
    assert res["sparsity"] == pytest.approx(measured["overall"])
    assert 0.3 < res["sparsity"] < 0.6  # depthwise kernels stay dense
    run = json.loads((out / "run.json").read_text())
    assert run["sparsity_target"] == 0.6 and run["parent_run"].endswith(tiny_run.name)


def test_short_fine_tune_still_prunes():
    """TF-MOT's default frequency (100 steps) would never fire in 12 steps; ours must."""
    sched, info = make_schedule(PruneConfig(), 0.5, total_steps=12)
    assert info["frequency"] <= 1 + (info["end_step"] - info["begin_step"]) // 10
    assert info["end_step"] < 12 and (info["end_step"] - info["begin_step"]) % info["frequency"] == 0
    _, sparsity = sched(info["end_step"])
    assert float(sparsity) == pytest.approx(0.5)
    with pytest.raises(GramTFError, match="end_step"):
        make_schedule(PruneConfig(end_step=50), 0.5, total_steps=12)


def test_head_scope_and_sweep_and_2_4(tiny_run):
    results = prune_run(tiny_run, PruneConfig(levels=[0.3, 0.8], epochs=1, batch_size=16, scope="head",
                                              schedule="constant"), progress=False)
    assert [r["sparsity_target"] for r in results] == [0.3, 0.8]
    for level in (30, 80):
        report = json.loads((tiny_run / f"pruned_{level}" / "sparsity_report.json").read_text())
        assert report["pruned"] == ["head_dense"]
        m = load_model(tiny_run / f"pruned_{level}" / "model.keras")
        k = m.get_layer("head_dense").kernel.numpy()
        assert np.mean(k == 0) == pytest.approx(level / 100, abs=0.01)
    [r24] = prune_run(tiny_run, PruneConfig(levels=[0.5], epochs=1, batch_size=16, structured_2_4=True),
                      progress=False)
    assert r24["structured_2_4_ok"] is True


def test_registry_report_and_bad_levels(tiny_run):
    model = load_model(tiny_run / "model.keras")
    rep = prunable_layer_report(model)
    assert "head_dense" in rep["prunable"] and "conv1" in rep["prunable"]
    assert rep["n_weighted"] == rep["n_prunable"] + len(rep["skipped"])
    with pytest.raises(GramTFError, match="between 0 and 1"):
        prune_run(tiny_run, PruneConfig(levels=[1.5]), progress=False)
    with pytest.raises(GramTFError, match="not a finished training run"):
        prune_run(tiny_run / "nope", PruneConfig(), progress=False)


@pytest.mark.parametrize("total_steps", [1, 2, 3, 12])
def test_derived_end_step_fits_any_data_size(total_steps):
    """E19: 8 images, prune.epochs 1, no end_step -> 1 step; the derived end_step must fit, never be blamed."""
    for cfg in (PruneConfig(epochs=1, schedule="constant"), PruneConfig(epochs=1, method="gradual", begin_step=0)):
        if cfg.schedule == "polynomial" and total_steps < 2:
            with pytest.raises(GramTFError) as e:  # a ramp needs 2 steps: say which settings make the 1
                make_schedule(cfg, 0.5, total_steps)
            assert "prune.end_step" not in str(e.value) and "prune.epochs 1" in str(e.value)
            assert "prune.batch_size 16" in str(e.value) and "prune.schedule constant" in str(e.value)
            continue
        _, info = make_schedule(cfg, 0.5, total_steps)
        assert info["begin_step"] <= info["end_step"] < total_steps
    with pytest.raises(GramTFError, match="prune.end_step 5 is past"):  # a value the user set is named
        make_schedule(PruneConfig(end_step=5), 0.5, total_steps=3)
