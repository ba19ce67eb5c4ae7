"""gram_tf.deploy.timing: the one latency primitive."""

def test_time_interleaved_orders_and_reports_drift():
    import time

    from gram_tf.deploy import time_interleaved

    calls = {"slow": 0, "fast": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.004)

    def fast():
        calls["fast"] += 1

    out = time_interleaved({"slow": slow, "fast": fast}, rounds=3, runs=5, warmup=1)
    assert calls == {"slow": 1 + 3 * 6, "fast": 1 + 3 * 6}  # warmup + (1 untimed + runs) per round
    assert out["slow"]["latency_ms_p50"] >= 4.0 > out["fast"]["latency_ms_p50"]
    assert out["slow"]["runs"] == 15
    assert out["slow"]["round_p50_min"] <= out["slow"]["latency_ms_p50"] <= out["slow"]["round_p50_max"] * 1.5


def test_sample_ms_counts_runs_or_stops_on_time():
    import time

    from gram_tf.deploy.timing import latency_stats, sample_ms

    calls = []
    ms = sample_ms(lambda: calls.append(1), runs=7, warmup=2)
    assert len(ms) == 7 and len(calls) == 9
    t0 = time.perf_counter()
    ms = sample_ms(lambda: time.sleep(0.002), runs=10_000, warmup=0, max_seconds=0.05)
    assert 3 <= len(ms) < 100 and time.perf_counter() - t0 < 1.0
    stats = latency_stats([1.0, 2.0, 3.0])
    assert stats["latency_ms_p50"] == 2.0 and stats["images_per_s"] == 500.0 and stats["runs"] == 3


def test_median_ci_uses_order_statistics():
    import numpy as np

    from gram_tf.deploy.timing import median_ci

    assert median_ci([3.0]) == (3.0, None, None)
    # 7 values: only [x(1), x(7)] reaches 95 % (98.4 %); [x(2), x(6)] covers 87.5 %
    assert median_ci([5, 1, 7, 3, 2, 6, 4]) == (4.0, 1.0, 7.0)
    # 10 values: [x(2), x(9)] covers 97.9 %, [x(3), x(8)] 89.1 %
    assert median_ci(np.arange(1.0, 11.0)) == (5.5, 2.0, 9.0)
    # 5 values cannot reach 95 %: [min, max]
    assert median_ci([2, 1, 3, 5, 4]) == (3.0, 1.0, 5.0)
    # a lower level narrows it
    assert median_ci(np.arange(1.0, 11.0), level=0.85) == (5.5, 3.0, 8.0)


def test_rotated_rounds_visit_every_model_once_per_round_in_turn():
    from gram_tf.deploy.timing import run_rounds

    order = []
    samplers = {k: (lambda k=k: order.append(k) or [1.0]) for k in "abc"}
    out = run_rounds(samplers, rounds=3)
    assert order == list("abc" "bca" "cab")
    assert all(len(v) == 3 for v in out.values())
    order.clear()
    run_rounds(samplers, rounds=2, schedule="sequential")
    assert order == list("aabbcc")


class DriftingMachine:
    """A fake machine whose speed drifts: a call of cost c at time t takes c * (1 + drift * t) ms, and
    the clock advances by what each call took (an injected clock, no real time)."""

    def __init__(self, drift_per_ms: float):
        self.t = 0.0
        self.drift = drift_per_ms

    def sampler(self, cost: float, runs: int):
        def visit():
            samples = []
            for _ in range(runs):
                took = cost * (1.0 + self.drift * self.t)
                self.t += took
                samples.append(took)
            return samples
        return visit


def _timed_rows(costs: dict, schedule: str, rounds=7, runs=5, drift=0.002):
    from gram_tf.deploy.timing import round_stats, run_rounds
    from gram_tf.report.schema import add_relative_columns

    machine = DriftingMachine(drift)
    visits = run_rounds({k: machine.sampler(c, runs) for k, c in costs.items()}, rounds, schedule=schedule)
    rows = [{"run": "r", "backbone": "bb", "variant": k, "runtime": "litert", "sparsity_target": 0.0, "threads": 1,
             "accuracy": 0.9, "size_bytes": 100, **round_stats(v)} for k, v in visits.items()]
    add_relative_columns(rows)
    return {r["variant"]: r for r in rows}


def test_drifting_clock_sequential_ranks_equal_models_apart_rounds_call_them_tied():
    from gram_tf.report.stats import tied

    old = _timed_rows({"fp32": 1.0, "int8": 1.0}, "sequential")
    assert old["int8"]["latency_ms_p50"] > 1.05 * old["fp32"]["latency_ms_p50"]  # drift became a "slowdown"
    assert not tied(old["fp32"], old["int8"])
    new = _timed_rows({"fp32": 1.0, "int8": 1.0}, "rotated")
    assert tied(new["fp32"], new["int8"])
    assert new["int8"]["speedup_ci_low"] <= 1.0 <= new["int8"]["speedup_ci_high"]
    assert abs(new["int8"]["speedup_vs_fp32"] - 1.0) < 0.05


def test_drifting_clock_keeps_a_truly_faster_model_faster_with_a_ci_excluding_one():
    from gram_tf.report.stats import tied

    new = _timed_rows({"fp32": 1.5, "int8": 1.0}, "rotated")
    fast, slow = new["int8"], new["fp32"]
    assert fast["latency_ms_p50"] < slow["latency_ms_p50"] and not tied(fast, slow)
    assert 1.0 < fast["speedup_ci_low"] <= fast["speedup_vs_fp32"] <= fast["speedup_ci_high"]
    assert fast["speedup_vs_fp32"] == __import__("pytest").approx(1.5, rel=0.05)
    assert fast["rounds"] == 7 and fast["runs"] == 35 and len(fast["round_ms"].split(";")) == 7
    # the machine's noise is the fp32 model's round-to-round spread (here: all drift)
    assert slow["spread_pct"] > 5


def test_spread_is_interquartile_so_one_hiccup_round_does_not_call_the_machine_noisy():
    from gram_tf.deploy.timing import spread_pct

    steady = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0]
    assert spread_pct(steady) < 3
    assert spread_pct([*steady[:-1], 1.6]) < 3  # one hiccup: the median of rounds ignores it, so does the guard
    assert spread_pct([1.0, 1.0, 1.0, 1.5, 1.5, 1.5, 1.25]) > 30  # a machine that changed speed half-way
    assert spread_pct([1.0]) is None
