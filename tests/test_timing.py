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
