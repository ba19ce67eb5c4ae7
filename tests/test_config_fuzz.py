"""Property tests of the config reader and the CLI's options (issue 36).

Every outcome of load_config is a StudyConfig whose numeric keys lie in their declared ranges, or one
GramTFError line of bounded length; every outcome of a command is exit 2 with exactly one `error:`
line. Never a traceback, never a hang (a deadline per example). The schema is enumerated, not listed
here, so a new key is fuzzed the day it is added. GRAM_TF_FUZZ_EXAMPLES raises the budget (CI: the
default, small).
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import types
import typing
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gram_tf.bench
import gram_tf.bench.importer
import gram_tf.data
import gram_tf.deploy
import gram_tf.deploy.profile
import gram_tf.report
from gram_tf.cli import main
from gram_tf.config import _fields, _merge, field_range, get_value, load_config, parse_overrides
from gram_tf.errors import GramTFError

MAX_LINE = 400
# the deadline is generous for a loaded 2-core machine; a hang (an alias bomb, a blocking read) blows it
FUZZ = settings(max_examples=int(os.environ.get("GRAM_TF_FUZZ_EXAMPLES", "40")), deadline=5000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
LEAVES = [(key, f, tp) for key, f, tp in _fields()]
SECTIONS = sorted({key.split(".")[0] for key, _, _ in LEAVES} | {key.split(".")[-1] for key, _, _ in LEAVES})
WORK = Path(tempfile.mkdtemp(prefix="gram_tf_fuzz_"))


def _nest(dotted: str, value) -> dict:
    head, _, rest = dotted.partition(".")
    return {head: _nest(rest, value) if rest else value}


def _check_outcome(call):
    """Run `call`: a config whose ranged keys hold, or one short GramTFError line."""
    try:
        cfg = call()
    except GramTFError as exc:
        msg = str(exc)
        assert "\n" not in msg and 0 < len(msg) <= MAX_LINE, msg[:600]
        return None
    for key, f, _ in LEAVES:  # accepted: every declared range holds
        if "range" in f.metadata:
            f.metadata["range"].check(get_value(cfg, key), key)
    return cfg


# -- values: right and wrong types, in and out of range ------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2),
    st.text(max_size=30), st.sampled_from(["1e-5", ".nan", "-.inf", "~", "yes", "0x1F", "1_000", "..", "/", ""]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _in_range(key: str, tp) -> st.SearchStrategy:
    rng = field_range(key)
    integer = "int" in str(tp) and "float" not in str(tp)
    if integer:
        one = st.integers(int(math.ceil(rng.lo)), int(min(rng.hi, 2 ** 40)))
    else:
        one = st.floats(rng.lo, min(rng.hi, 1e9), exclude_min=rng.lo_open, exclude_max=rng.hi_open,
                        allow_nan=False, allow_infinity=False)
    return st.lists(one, min_size=1, max_size=3) if "list" in str(tp) else one


RANGED = [(key, tp) for key, f, tp in LEAVES if "range" in f.metadata]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([k for k, _, _ in LEAVES]), values), min_size=1, max_size=4))
def test_any_value_for_any_key(pairs):
    tree: dict = {}
    for key, value in pairs:
        tree = _merge(tree, _nest(key, value))
    _check_outcome(lambda: load_config(None, tree))


@FUZZ
@given(st.data())
def test_in_range_values_are_accepted(data):
    """The declared range is the truth: a value inside it is never refused (except by a cross-key rule)."""
    key, tp = data.draw(st.sampled_from(RANGED))
    value = data.draw(_in_range(key, tp))
    try:
        cfg = load_config(None, _nest(key, value))
    except GramTFError as exc:
        assert key in ("data.val", "data.test") and "data.val + data.test" in str(exc), str(exc)
        return
    assert get_value(cfg, key) == value


# -- random YAML documents: structure, aliases, duplicates, nesting ------------------------------------
def _yaml_docs() -> st.SearchStrategy:
    keys = st.one_of(st.sampled_from(SECTIONS), st.text(max_size=10))
    tree = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
    dumped = st.dictionaries(keys, tree, max_size=5).map(lambda d: yaml.safe_dump(d, allow_unicode=True))

    def mutate(args):
        text, how, n = args
        if how == "alias":
            return "x: &a [1, 2]\n" + text + "y: *a\n"
        if how == "duplicate":
            return text + text
        if how == "deep":
            return "train: " + "[" * n + "]" * (n if n % 2 else 0) + "\n"
        if how == "deep-map":
            return "train: " + "{a: " * n + "1" + "}" * n + "\n"
        if how == "truncate":
            return text[: n % (len(text) + 1)]
        return text

    mutated = st.tuples(dumped, st.sampled_from(["none", "alias", "duplicate", "deep", "deep-map", "truncate"]),
                        st.integers(1, 30000)).map(mutate)
    pieces = st.sampled_from(list("[]{}&*!|>-:?,#'\"%@` \n\tab19.") + ["train", "seed", "<<", "  ", "!!int ", ".nan"])
    raw = st.lists(pieces, max_size=60).map("".join)
    return st.one_of(mutated, raw)


@FUZZ
@given(_yaml_docs())
def test_random_yaml_documents(text):
    path = WORK / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    _check_outcome(lambda: load_config(path))


# -- random --set strings ------------------------------------------------------------------------------
set_keys = st.one_of(st.sampled_from([k for k, _, _ in LEAVES]), st.text(max_size=20),
                     st.lists(st.sampled_from(SECTIONS + [""]), min_size=1, max_size=4).map(".".join))
set_values = st.one_of(st.text(max_size=40), values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
                       st.sampled_from(["&a [1]", "[*a]", "{a: 1, a: 2}", "[" * 5000, "!!int x", "2001-02-30"]))


@FUZZ
@given(st.lists(st.tuples(set_keys, st.sampled_from(["=", "", "=="]), set_values).map("".join), max_size=4))
def test_random_set_strings(sets):
    _check_outcome(lambda: load_config("configs/quickstart.yaml", parse_overrides(sets)))


# -- the CLI: every numeric option of the fast commands, with the work stubbed out ---------------------
def _stub(*args, **kwargs):
    raise GramTFError("stub reached")


(WORK / "log.txt").write_text("x\n")
(WORK / "c.yaml").write_text("name: fuzz\n")
COMMANDS = {  # argv before the options, and the options fuzzed
    "bench run": (["bench", "run", "x.tflite", "--out", str(WORK / "r.csv")],
                  ["--threads", "--runs", "--warmup", "--max-seconds"]),
    "bench import": (["bench", "import", str(WORK / "log.txt"), "--device", "d", "--models", str(WORK)], ["--threads"]),
    "profile": (["profile", "README.md"], ["--threads", "--runs"]),
    "peak": (["peak"], ["--threads"]),
    "predict": (["predict", "m.tflite", "x.png"], ["--top-k", "--threads", "--workers", "--size"]),
    "report": (["report", "r.csv", "--out", str(WORK / "rep")], ["--max-drop-pp", "--max-drop"]),
    "data synth": (["data", "synth", str(WORK / "synth")], ["--per-class", "--size", "--seed", "--fields-per-specimen"]),
    "data split": (["data", "split", str(WORK), "--out", str(WORK / "m.csv")], ["--val", "--test", "--seed"]),
    "run": (["run", str(WORK / "c.yaml")], ["--set", "--set"]),
    "prune": (["prune", str(WORK)], ["--final-sparsity", "--sweep", "--max-drop-pp", "--max-drop", "--epochs", "--frequency", "--set"]),
    "convert": (["convert", str(WORK)], ["--representative-samples", "--calibration-percentile", "--set"]),
}
tokens = st.one_of(st.integers(-10 ** 6, 10 ** 6).map(str), st.integers().map(str),
                   st.floats().map(repr), st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1", "2", "100000", "",
                                                           "1,2", "1,,x", "0.5", "1e309"]),
                   st.text(max_size=20), set_keys.map(lambda k: k + "=1"))


def _stubbed(mp):
    for mod, name in ((gram_tf.bench, "bench_paths"), (gram_tf.bench, "measure_peak"),
                      (gram_tf.bench.importer, "import_logs"), (gram_tf.deploy.profile, "delegation"),
                      (gram_tf.deploy, "Classifier"), (gram_tf.report, "load_results"),
                      (gram_tf.data, "synthesize_dataset"), (gram_tf.data, "split_dataset"),
                      (gram_tf.data, "manifest_path")):
        mp.setattr(mod, name, _stub)
    for fake in ("gram_tf.pipeline", "gram_tf.optimize", "gram_tf.convert"):  # TensorFlow-heavy stages
        mp.setitem(sys.modules, fake, types.SimpleNamespace(run_study=_stub, prune_run=_stub, convert_run=_stub,
                                                            run_sensitivity=_stub, sensitivity_table=_stub))


@FUZZ
@given(st.sampled_from(sorted(COMMANDS)), st.data())
def test_cli_options(command, data):
    argv, options = COMMANDS[command]
    chosen = data.draw(st.lists(st.sampled_from(range(len(options))), unique=True))
    args = [*argv]
    for opt in (options[i] for i in chosen):
        args += [opt, data.draw(tokens)]
    with pytest.MonkeyPatch.context() as mp:
        _stubbed(mp)
        res = CliRunner().invoke(main, args)
    out = res.output
    assert "Traceback" not in out and not isinstance(res.exception, (AssertionError, TypeError)), (args, out)
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert res.exit_code == 2, (args, out)
    errors = [line for line in out.splitlines() if line.lower().startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) <= MAX_LINE, (args, out[:600])
    if errors[0] == "error: stub reached":  # the options passed their checks: each is in its config range
        for opt, key in (("--runs", "bench.runs"), ("--max-seconds", "bench.max_seconds"), ("--warmup", "bench.warmup")):
            if opt in args and command == "bench run":
                value = float(args[args.index(opt) + 1])
                assert value in field_range(key), (args, key)
