"""Issue 35: every choice list and repeated name lives once. The config's lists are the ones the
implementing modules dispatch on, the CLI offers and the help shows; old spellings still read, with a
notice. (tests/test_cli.py checks each click.Choice is its config key's list.)"""

import numpy as np
import pytest
from click.testing import CliRunner

from gram_tf import config
from gram_tf.cli import main
from gram_tf.config import _CHOICES, ConvertConfig, load_config
from gram_tf.errors import GramTFError

def test_calibration_methods_are_the_implemented_ones():
    from gram_tf.convert.calibration import METHODS, SEARCH, Calibration, range_from_histogram

    assert _CHOICES["convert.calibration"] == (config.AUTO,) + METHODS + (SEARCH,)
    hist, edges = np.array([1, 5, 20, 5, 1] * 60), np.linspace(-3.0, 4.0, 301)
    for method in METHODS:  # each word the config accepts is one the calibration computes
        lo, hi = range_from_histogram(hist, edges, Calibration(method, bins=300))
        assert -3.0 <= lo <= 0.0 <= hi <= 4.0, method
    with pytest.raises(GramTFError, match=", ".join(METHODS)):  # the message lists the table
        Calibration(config.AUTO)

@pytest.mark.parametrize("value", _CHOICES["convert.bias_correction"])
def test_every_bias_correction_word_resolves_to_a_recipe(value):
    from gram_tf.convert.recipe import BIAS_CORRECTION, resolve_recipe
    from gram_tf.optimize.bias_correction import correct_bias  # noqa: F401  (takes BIAS_CORRECTION_INPUTS)

    for per_channel, pruned in ((True, False), (False, False), (True, True)):
        recipe = resolve_recipe(ConvertConfig(bias_correction=value), per_channel=per_channel, pruned=pruned)
        assert recipe.bias_correction in BIAS_CORRECTION
        assert recipe.bias_correction == value or value == config.AUTO

def test_equalize_words_and_the_recipes_old_word():
    from gram_tf.convert.recipe import Int8Recipe, resolve_recipe

    got = {v: resolve_recipe(ConvertConfig(equalize=v), per_channel=False).equalize for v in _CHOICES["convert.equalize"]}
    assert got == {"auto": True, "always": True, "never": False}
    assert not resolve_recipe(ConvertConfig(equalize="auto"), per_channel=True).equalize
    with pytest.raises(GramTFError, match="convert.equalize"):
        resolve_recipe(ConvertConfig(equalize="off"), per_channel=True)  # a ConvertConfig built in code
    assert Int8Recipe(True, "off") == Int8Recipe(True, config.NEVER)  # the recipe said `off` before `never`

def test_gelu_and_io_types_are_the_config_lists():
    from gram_tf.convert import VARIANTS
    from gram_tf.models.registry import gelu_choice

    assert [gelu_choice({"gelu": g}) for g in config.GELU_FORMS] == list(config.GELU_FORMS)
    assert gelu_choice({}) == config.TrainConfig().gelu
    with pytest.raises(GramTFError, match="erf, tanh"):
        gelu_choice({"gelu": "sigmoid"})
    integer_io = {v.name: v.io_types for v in VARIANTS.values() if v.io_types != ("float32",)}
    assert integer_io and all(set(t) == set(config.IO_TYPES) for t in integer_io.values()), integer_io

def test_convert_help_lists_every_variant_and_the_defaults_are_variants():
    from gram_tf.convert import variant_names

    res = CliRunner().invoke(main, ["convert", "--help"], terminal_width=400)
    assert res.exit_code == 0, res.output
    assert ", ".join(variant_names()) in " ".join(res.output.split())
    assert {"int8-selective", "int8-fast"} <= set(variant_names())
    cfg = ConvertConfig()
    assert set(cfg.variants + cfg.pruned_variants) <= set(variant_names())

def test_old_budget_keys_read_in_percentage_points(capsys):
    cfg = load_config(None, ["report.max_drop=0.02", "convert.fast_max_drop=0.07"])
    assert cfg.report.max_drop_pp == 2.0 and cfg.convert.fast_max_drop_pp == 7.0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("notice: ") and "deprecated" in line for line in err)
    with pytest.raises(GramTFError, match="both 'report.max_drop' and 'report.max_drop_pp'"):
        load_config(None, ["report.max_drop=0.02", "report.max_drop_pp=2"])
    assert load_config(None).convert.selective_max_drop_pp == 1.0  # 1 pp, the old 0.01

@pytest.mark.parametrize("argv, fraction", [
    ([], 0.01), (["--max-drop-pp", "2.5"], 0.025), (["--max-drop", "0.03"], 0.03),  # old spelling: a fraction
])
def test_report_budget_is_percentage_points(monkeypatch, argv, fraction):
    import gram_tf.report

    seen = {}
    monkeypatch.setattr(gram_tf.report, "load_results", lambda paths: [])
    monkeypatch.setattr(gram_tf.report, "build_report",
                        lambda rows, out, max_drop, **_: seen.update(max_drop=max_drop) or {"report": "r.md"})
    res = CliRunner().invoke(main, ["report", "r.csv", "--out", "o", *argv])
    assert res.exit_code == 0, res.output
    assert seen["max_drop"] == pytest.approx(fraction)
    assert ("notice: --max-drop is deprecated" in res.output) == ("--max-drop" in argv)

def test_prune_old_spelling_is_the_same_points(monkeypatch):
    import gram_tf.optimize

    seen = []
    monkeypatch.setattr(gram_tf.optimize, "prune_run", lambda run_dir, cfg, seed: seen.append(cfg.max_drop_pp) or [])
    for argv in (["--max-drop-pp", "1.5"], ["--max-drop", "1.5"]):  # prune's old spelling was in points already
        res = CliRunner().invoke(main, ["prune", "r", *argv])
        assert res.exit_code == 0, res.output
    assert seen == [1.5, 1.5]
    res = CliRunner().invoke(main, ["prune", "r", "--max-drop", "1", "--max-drop-pp", "1"])
    assert res.exit_code == 2 and "pass only --max-drop-pp" in res.output

def test_result_columns_and_types_come_from_one_table():
    from gram_tf.bench.device import device_info
    from gram_tf.report import schema

    sets = [schema.INT_COLUMNS, schema.STR_COLUMNS, schema.BOOL_COLUMNS, schema.FLOAT_COLUMNS]
    assert sum(map(len, sets)) == len(set(schema.COLUMNS)) == len(schema.COLUMNS)  # each column typed once
    assert list(device_info("x")) == schema.DEVICE_COLUMNS and set(schema.DEVICE_COLUMNS) <= set(schema.COLUMNS)

def test_one_name_per_concept():
    import warnings

    import gram_tf.bench
    import gram_tf.runtime
    from gram_tf.deploy import format_predictions

    assert "annotate" not in gram_tf.bench.__all__ and "format_table" not in vars(gram_tf.runtime)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert gram_tf.runtime.format_table is format_predictions  # old callers keep working
        assert gram_tf.bench.annotate is gram_tf.bench.add_roofline_columns
    assert len(caught) == 2 and all(issubclass(w.category, DeprecationWarning) for w in caught)

def test_layer_and_op_tables_are_shared():
    import importlib

    from gram_tf.deploy import profile

    bias_correction, equalize, fold = (importlib.import_module(f"gram_tf.optimize.{m}")
                                       for m in ("bias_correction", "equalize", "fold"))

    assert equalize.LINEAR is fold.LINEAR and bias_correction.LINEAR is fold.LINEAR
    assert bias_correction.BIAS_CORRECTION_INPUTS is config.BIAS_CORRECTION_INPUTS
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(profile.MAC_OPS)
