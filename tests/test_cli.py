"""The command tree: every command has --help; errors are one line; --help stays TensorFlow-free."""
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gram_tf.cli import main
from gram_tf.data import SYNTH_GROUP_PATTERN

ROOT = Path(__file__).resolve().parents[1]


def _walk(group=main, prefix=()):
    """(argv, command, its group) for every group and command under `group`, read from the click tree."""
    for name, cmd in group.commands.items():
        yield [*prefix, name], cmd, group
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, (*prefix, name))


def _leaf_commands():
    """(argv, accepted spellings in the docs): a group's default command may be written without its
    name (`gram-tf bench MODELS` is `bench run`)."""
    for argv, cmd, group in _walk():
        if not isinstance(cmd, click.Group):
            spellings = [" ".join(argv)]
            if getattr(group, "default_command", None) == argv[-1]:
                spellings.append(" ".join(argv[:-1]))
            yield argv, spellings


COMMANDS = [[]] + [argv for argv, _, _ in _walk()]


def test_the_command_list_comes_from_the_click_tree():
    leaves = {" ".join(argv) for argv, _ in _leaf_commands()}
    # the commands added after the first list was written by hand: the walk must reach them
    assert {"profile", "peak", "bench run", "bench import", "inspect", "data synth"} <= leaves
    assert ["bench"] in COMMANDS and [] in COMMANDS


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(cmd):
    result = CliRunner().invoke(main, cmd + ["--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: main " + " ".join(cmd)), result.output


def _readme_command_rows():
    """The command column of the README's command table: `gram-tf data synth DIR` -> 'data synth DIR'."""
    rows = re.findall(r"^\| `gram-tf ([^`]+)` \|", (ROOT / "README.md").read_text(encoding="utf-8"), re.M)
    assert rows, "README.md has no command table"
    return rows


def _documents(row: str, spelling: str) -> bool:
    """Whether a README row is the command `spelling`: its words, then only arguments (MODEL, PATHS)
    or options, so `bench` does not claim the row of `bench import`."""
    words, name = row.split(), spelling.split()
    rest = words[len(name):]
    return words[:len(name)] == name and (not rest or rest[0].isupper() or rest[0].startswith("-"))


def test_readme_command_table_covers_every_command():
    """Adding a command without a row in the README's command table fails here, and so does a row
    for a command that is gone."""
    rows = _readme_command_rows()
    leaves = list(_leaf_commands())
    missing = [argv for argv, spellings in leaves
               if not any(_documents(row, s) for row in rows for s in spellings)]
    assert not missing, f"commands without a row in README.md's command table: {missing}"
    spellings = [s for _, ss in leaves for s in ss]
    stale = [row for row in rows if not any(_documents(row, s) for s in spellings)]
    assert not stale, f"README.md command table rows naming no command: {stale}"


def test_help_does_not_import_tensorflow():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom gram_tf.cli import main\n"
            "r = CliRunner().invoke(main, ['--help'])\nassert r.exit_code == 0\n"
            "print('tensorflow' in sys.modules, 'tf_keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_backbones_lists_name_first_without_building():
    result = CliRunner().invoke(main, ["backbones", "--no-measure"])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()[2:]]
    for required in ("inception_v3", "resnet50", "mobilenet_v1_100", "mobilenet_v2_035",
                     "efficientnet_lite0", "convnext_tiny", "mobilenet_v3_small"):
        assert required in names


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    err = result.output.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), result.output
    for n in needles:
        assert n in err[0]


def test_unknown_backbone_is_one_line(tmp_path):
    (tmp_path / "m.csv").write_text("x")
    r = CliRunner().invoke(main, ["train", "--manifest", str(tmp_path / "m.csv"), "--backbone",
                                  "mobilenet_v2_35", "--out", str(tmp_path / "run")])
    _one_line_error(r, "unknown backbone 'mobilenet_v2_35'", "mobilenet_v2_035")


def test_config_typo_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trian:\n  epochs: 2\n")
    r = CliRunner().invoke(main, ["run", str(cfg)])
    _one_line_error(r, "unknown key 'trian'", str(cfg))


def test_unknown_variant_and_missing_run_are_one_line(tmp_path):
    r = CliRunner().invoke(main, ["convert", str(tmp_path), "--variants", "int4"])
    _one_line_error(r, "unknown variant 'int4'")
    r = CliRunner().invoke(main, ["convert", str(tmp_path), "--variants", "int8"])
    _one_line_error(r, "not a finished training run")


def test_data_commands_end_to_end(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    r = runner.invoke(main, ["data", "synth", str(out), "--per-class", "8", "--size", "48", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "gram_positive" in r.output and "gram_negative" in r.output
    r = runner.invoke(main, ["data", "check", str(out)])
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    assert r.stdout.splitlines()[-1] == "16 files, 0 unreadable, 0 duplicate groups: OK", r.output
    r = runner.invoke(main, ["data", "split", str(out), "--out", str(tmp_path / "m.csv"), "--val", "0.25",
                             "--test", "0.25", "--group-pattern", SYNTH_GROUP_PATTERN])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.csv").read_text().startswith("path,label,split,group,sha256,status")
    (out / "gram_positive" / "zero.png").write_bytes(b"")
    (out / "gram_empty").mkdir()
    r = runner.invoke(main, ["data", "check", str(out)])
    assert r.exit_code == 1
    assert "zero.png" in r.output and "gram_empty" in r.output
    assert r.stdout.splitlines()[-1].endswith(" duplicate groups: NOT OK"), r.output


def test_data_check_warns_in_one_line_when_names_look_grouped(tmp_path):
    from PIL import Image

    for cls in ("cocci", "rods"):
        (tmp_path / cls).mkdir()
        for p in range(3):
            for f in range(2):
                Image.new("RGB", (8, 8), (p * 50 + f, len(cls), 0)).save(tmp_path / cls / f"smear{p}_{f}.png")
    r = CliRunner().invoke(main, ["data", "check", str(tmp_path)])
    warnings = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert r.exit_code == 0 and len(warnings) == 1 and "smear2_0.png" in warnings[0], r.output
    r = CliRunner().invoke(main, ["data", "check", str(tmp_path), "--group-pattern", r"^(smear\d)_"])
    assert r.exit_code == 0 and "warning" not in r.output, r.output


@pytest.mark.parametrize("argv, needle", [
    (["predict", "m.tflite", "x.png", "--workers", "0"], "--workers"),
    (["predict", "m.tflite", "x.png", "--workers", "-1"], "--workers"),
    (["predict", "m.tflite", "x.png", "--top-k", "0"], "--top-k"),
    (["predict", "m.tflite", "x.png", "--threads", "0"], "bench.threads"),
    (["profile", "README.md", "--runs", "0"], "bench.runs"),
    (["profile", "README.md", "--threads", "100000"], "bench.threads"),
    (["report", "r.csv", "--out", "o", "--max-drop-pp", "nan"], "report.max_drop_pp"),
    (["report", "r.csv", "--out", "o", "--max-drop-pp", "500"], "report.max_drop_pp"),
    (["report", "r.csv", "--out", "o", "--max-drop", "5"], "--max-drop (deprecated)"),  # a fraction: 1 at most
    (["prune", "r", "--max-drop-pp", "101"], "prune.max_drop_pp"),
    (["convert", "r", "--calibration-percentile", "50"], "convert.calibration_percentile"),
    (["bench", "run", "x.tflite", "--max-seconds", "nan"], "bench.max_seconds"),
    (["bench", "run", "x.tflite", "--max-seconds", "-1"], "bench.max_seconds"),
    (["bench", "run", "x.tflite", "--threads", "100000"], "bench.threads"),
    (["bench", "run", "x.tflite", "--runs", "0"], "bench.runs"),
    (["bench", "run", "x.tflite", "--warmup", "-1"], "bench.warmup"),
    (["peak", "--threads", "0"], "bench.threads"),
    (["data", "synth", "o", "--per-class", "0"], "data.synth_per_class"),
    (["data", "split", "d", "--out", "m.csv", "--val", "nan"], "data.val"),
    (["run", "configs/quickstart.yaml", "--set", "bench.threads=[100000]"], "bench.threads"),
])
def test_numeric_options_use_the_config_ranges(argv, needle):
    """Issue 36: each option is checked against the range declared beside its config key, as one line."""
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.output


def test_every_choice_option_offers_exactly_its_config_keys_choices():
    """A click.Choice of a command that sets a config key is that key's choice list, not a copy of it."""
    import click

    from gram_tf.cli import main
    from gram_tf.config import _CHOICES, EXECUTORS

    lists = {**_CHOICES, "run.executor": EXECUTORS}  # the one choice that is no config key's: config.py's list
    checked = 0
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param.type, click.Choice):
                key = f"{name}.{param.name}"
                assert key in lists, f"{key}: a choice option with no config key to derive it from"
                assert tuple(param.type.choices) == tuple(lists[key]), key
                checked += 1
    assert checked >= 8
