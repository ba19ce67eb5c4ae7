"""gram_tf.metrics: calibration (ECE, Brier, NLL) on hand-computed cases, temperature scaling, and the
accuracy-coverage curve of selective prediction (numpy only; fast)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gram_tf.metrics import (accuracy_coverage, apply_temperature, brier_score, classification_metrics,
                             coverage_at_accuracy, expected_calibration_error, fit_temperature, format_scores, nll,
                             parse_scores, reliability_bins)


def _binary(top: float, correct: list) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities with the top score `top` on class 0, and labels: class 0 where correct."""
    probs = np.tile([top, 1.0 - top], (len(correct), 1))
    return np.where(np.asarray(correct, bool), 0, 1), probs


def test_a_perfectly_calibrated_model():
    y, p = _binary(0.8, [1] * 8 + [0] * 2)  # says 80 %, right 8 times in 10
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(y, p, adaptive=True) == pytest.approx(0.0, abs=1e-12)
    # right: 0.2^2 + 0.2^2; wrong: 0.8^2 + 0.8^2
    assert brier_score(y, p) == pytest.approx((8 * 0.08 + 2 * 1.28) / 10)
    assert nll(y, p) == pytest.approx(-(8 * math.log(0.8) + 2 * math.log(0.2)) / 10)


def test_an_over_confident_model():
    y, p = _binary(0.99, [1] * 6 + [0] * 4)  # says 99 %, right 6 times in 10
    assert expected_calibration_error(y, p) == pytest.approx(0.39)
    assert brier_score(y, p) == pytest.approx((6 * 2 * 0.01 ** 2 + 4 * 2 * 0.99 ** 2) / 10)
    assert nll(y, p) == pytest.approx(-(6 * math.log(0.99) + 4 * math.log(0.01)) / 10)


def test_equal_width_and_equal_mass_bins_differ_as_computed_by_hand():
    y = np.array([0, 1, 0, 0])  # top scores 0.55 (right), 0.58 (wrong), 0.9 and 0.95 (right)
    p = np.array([[0.55, 0.45], [0.58, 0.42], [0.9, 0.1], [0.95, 0.05]])
    # equal width: (8/15, 9/15] holds two (mean 0.565, one right), 0.9 and 0.95 one bin each
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.065 + 0.25 * 0.1 + 0.25 * 0.05)
    # equal mass: four images in four bins of one
    assert expected_calibration_error(y, p, adaptive=True) == pytest.approx((0.45 + 0.58 + 0.1 + 0.05) / 4)
    assert expected_calibration_error(y, p, n_bins=2, adaptive=True) == pytest.approx(
        0.5 * abs(0.5 - 0.565) + 0.5 * abs(1 - 0.925))
    bins = reliability_bins(p.max(1), [1, 0, 1, 1])
    assert [(b["n"], b["accuracy"]) for b in bins] == [(2, 0.5), (1, 1.0), (1, 1.0)]
    assert bins[0]["confidence"] == pytest.approx(0.565)
    # edges are right-closed: 1/15 goes to the first bin, with 0; 1.0 to the last
    edges = reliability_bins([0.0, 1 / 15, 3 / 15, 1.0], [1, 1, 1, 1])
    assert [b["n"] for b in edges] == [2, 1, 1] and edges[1]["lo"] == 3 / 15 and edges[2]["lo"] == 1.0
    # equal scores are never split between equal-mass bins
    assert [b["n"] for b in reliability_bins([0.7] * 5 + [0.9] * 3, [1] * 8, adaptive=True)] == [5, 3]


def _over_confident(n: int, sharpen: float, seed: int):
    """Labels drawn from calibrated logits z, and probabilities of z * sharpen (an over-confident model)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, 3))
    calibrated = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in calibrated])
    sharp = np.exp(sharpen * z) / np.exp(sharpen * z).sum(1, keepdims=True)
    return y, sharp


def test_temperature_scaling_undoes_over_confidence_and_lowers_nll():
    y, p = _over_confident(3000, 4.0, seed=0)
    t = fit_temperature(y, p)
    assert t == pytest.approx(4.0, rel=0.1)  # it recovers the sharpening
    scaled = apply_temperature(p, t)
    assert (scaled.argmax(1) == p.argmax(1)).all()  # labels never change
    assert nll(y, scaled) < nll(y, p) - 0.3
    assert expected_calibration_error(y, scaled) < expected_calibration_error(y, p) / 3
    # on images it was not fitted on, too
    y2, p2 = _over_confident(1000, 4.0, seed=1)
    assert nll(y2, apply_temperature(p2, t)) < nll(y2, p2)
    m = classification_metrics(y2, p2, ["a", "b", "c"], temperature=t)
    assert m["temperature"] == t and m["nll_ts"] < m["loss"] and m["ece_ts"] < m["ece"]
    assert m["brier_ts"] < m["brier"]


def test_temperature_edge_cases():
    p = np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)
    assert apply_temperature(p, None) is p and apply_temperature(p, 1.0) is p
    assert apply_temperature(p, 2.0).dtype == np.float32
    np.testing.assert_allclose(apply_temperature(p, 2.0)[0], [math.sqrt(0.7), math.sqrt(0.3)] / np.sum(
        [math.sqrt(0.7), math.sqrt(0.3)]), rtol=1e-6)
    assert fit_temperature([0, 1], p) == 1.0  # no error to learn from: the scores stay as they are
    assert fit_temperature([], np.zeros((0, 2))) is None
    # an under-confident model is sharpened (T < 1)
    y, p = _over_confident(2000, 0.5, seed=2)
    assert fit_temperature(y, p) == pytest.approx(0.5, rel=0.15)


def test_accuracy_coverage_on_a_known_ranking():
    scores = [0.5, 0.9, 0.8, 0.6, 0.8]
    correct = [0, 1, 1, 1, 0]
    curve = accuracy_coverage(scores, correct)
    assert curve == [(0.9, 0.2, 1.0), (0.8, 0.6, pytest.approx(2 / 3)), (0.6, 0.8, 0.75), (0.5, 1.0, 0.6)]
    assert coverage_at_accuracy(scores, correct, 0.75) == (0.8, 0.6)  # the largest coverage that reaches it
    assert coverage_at_accuracy(scores, correct, 0.7) == (0.8, 0.6)
    assert coverage_at_accuracy(scores, correct, 0.6) == (1.0, 0.5)
    assert coverage_at_accuracy(scores, correct, 1.0) == (0.2, 0.9)
    assert coverage_at_accuracy([0.9, 0.8], [0, 1], 0.9) == (None, None)
    assert accuracy_coverage([], []) == []


def test_scores_cell_round_trips_and_refuses_junk():
    cell = format_scores([0.99996, 0.5, 1.0, 0.12344])
    assert cell == "1;0.5;1;0.1234"
    np.testing.assert_allclose(parse_scores(cell), [1.0, 0.5, 1.0, 0.1234])
    assert parse_scores("") is None and parse_scores(None) is None
    for bad in ("0.5;x", "1.5", "-0.1", "nan"):
        with pytest.raises(ValueError):
            parse_scores(bad)
    m = classification_metrics([0, 1], np.array([[0.9, 0.1], [0.7, 0.3]]), ["a", "b"])
    assert m["confidence"] == "0.9;0.7" and m["correct"] == "10" and "temperature" not in m
