"""`gram-tf run`: the whole study from one config, resumable."""
import yaml
from click.testing import CliRunner

from gram_tf.cli import main
from gram_tf.config import load_config
from gram_tf.pipeline import run_study

TINY = {
    "name": "tiny", "seed": 0, "backbones": ["mobilenet_v1_025"],
    "data": {"synth_per_class": 16, "synth_size": 64, "val": 0.25, "test": 0.25,
             "external": {"faded": {"synth_style": "faded", "synth_per_class": 4}}},
    "train": {"input_size": 32, "weights": "none", "epochs": 5, "augment_views": 1, "tensorboard": False},
    "prune": {"levels": [0.5], "epochs": 2, "batch_size": 8},
    "convert": {"variants": ["fp32", "int8"], "pruned_variants": ["fp32"], "representative_samples": 8,
                "check_samples": 8},
    "bench": {"threads": [1], "rounds": 3, "runs": 2, "warmup": 1, "keras_reference": False},
}


def test_run_end_to_end_then_resume_without_recomputing(tmp_path):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({**TINY, "out": str(tmp_path / "runs"),
                                        "tflite_dir": str(tmp_path / "tflite_models")}))
    result = CliRunner().invoke(main, ["run", str(cfg_file)])
    assert result.exit_code == 0, result.output
    assert "report ->" in result.output and "latency_ms_p50" in result.output
    root = tmp_path / "runs" / "tiny"
    tfl = tmp_path / "tflite_models" / "tiny"
    names = sorted(p.name for p in tfl.glob("*.tflite"))
    assert names == ["mobilenet_v1_025__fp32.tflite", "mobilenet_v1_025__int8.tflite",
                     "mobilenet_v1_025__pruned50-fp32.tflite"]
    assert (root / "report" / "report.md").is_file() and (root / "results.csv").is_file()
    # every artifact's calibration and selective prediction, with the reliability diagram
    md = (root / "report" / "report.md").read_text(encoding="utf-8")
    assert "## 8. Calibration" in md and "## 9. Selective prediction" in md and "](reliability.png)" in md
    assert (root / "report" / "reliability.png").is_file() and (root / "report" / "accuracy_coverage.png").is_file()
    # the synthetic external set: rendered by the study, every artifact evaluated on it, the report's shift section
    from gram_tf.report import load_results

    rows = load_results([root / "results.csv"])
    assert sorted(p.name for p in (root / "external" / "faded").iterdir()) == ["gram_negative", "gram_positive"]
    ext = {(r["variant"], r["sparsity_target"]): r for r in rows if r["dataset"] == "faded"}
    timed = {(r["variant"], r["sparsity_target"]) for r in rows if r["dataset"] == "test"}
    assert set(ext) == timed == {("fp32", 0.0), ("int8", 0.0), ("fp32", 0.5)}
    assert all(r["n_test"] == 8 and r["latency_ms_p50"] is None for r in ext.values())
    md = (root / "report" / "report.md").read_text()
    assert "## Does compression hurt generalization? External test sets" in md and "| faded | mobilenet_v1_025 |" in md
    assert "on the test split and on every external test set (faded)" in md
    # the study's artifacts are phone-ready: both metadata entries, labels packed, uint8 pixels in
    from gram_tf.deploy import list_metadata_names, read_packed_files

    for path in tfl.glob("*.tflite"):
        assert {"gram_tf", "TFLITE_METADATA"} <= set(list_metadata_names(path)), path
        assert read_packed_files(path) == {"labels.txt": b"gram_negative\ngram_positive\n"}
    info = CliRunner().invoke(main, ["predict", "--info", str(tfl / "mobilenet_v1_025__int8.tflite")])
    assert info.exit_code == 0, info.output
    assert "gram_tf entry:" in info.output and "TFLITE_METADATA entry:" in info.output
    assert "image uint8 [1, 32, 32, 3] scale 1 zero point 0" in info.output and "labels.txt" in info.output
    mtimes = {p: p.stat().st_mtime_ns for p in [*tfl.glob("*.tflite"), root / "runs" / "mobilenet_v1_025" / "model.keras",
                                                 root / "results.csv"]}

    again = run_study(load_config(cfg_file), progress=False)
    assert again["stages"]["ran"] == ["report"]
    assert set(again["stages"]["skipped"]) >= {"data", "external", "train-mobilenet_v1_025", "prune-mobilenet_v1_025-50",
                                               "convert-mobilenet_v1_025-dense", "bench-mobilenet_v1_025"}
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert len(again["rows"]) == 6  # 3 artifacts, timed on the test split and evaluated on the external set

    # changing one stage's config recomputes that stage and what follows, nothing before it
    changed = run_study(load_config(cfg_file, ["bench.runs=5"]), progress=False)
    assert changed["stages"]["ran"] == ["bench-mobilenet_v1_025", "report"]

    # a config that drops a variant drops its rows: bench times this config's artifacts, not a glob
    fewer = run_study(load_config(cfg_file, ["convert.variants=[fp32]"]), progress=False)
    assert {(r["variant"], r["sparsity_target"], r["dataset"]) for r in fewer["rows"]} == {
        (v, s, d) for v, s in (("fp32", 0.0), ("fp32", 0.5)) for d in ("test", "faded")}
    assert (tfl / "mobilenet_v1_025__int8.tflite").is_file()  # kept on disk, just not this study's any more

    # a second study of the same name in another --out folder cannot take over these artifacts
    import pytest

    from gram_tf.errors import GramTFError

    with pytest.raises(GramTFError, match="holds the artifacts of the study in"):
        run_study(load_config(cfg_file, [f"out={tmp_path / 'other'}"]), progress=False)
    assert not (tmp_path / "other" / "tiny" / "results.csv").exists()

    # an artifact changed on disk is not a finished conversion: the stage runs again
    victim = tfl / "mobilenet_v1_025__fp32.tflite"
    victim.write_bytes(victim.read_bytes()[:-16] + bytes(16))
    redo = run_study(load_config(cfg_file, ["convert.variants=[fp32]"]), progress=False)
    assert "convert-mobilenet_v1_025-dense" in redo["stages"]["ran"]


def test_a_study_never_writes_into_a_folder_it_did_not_make(tmp_path):
    """E9/E10: out/<name> holding the user's own files (name '.' pointed it at out itself) is refused."""
    import pytest

    from gram_tf.errors import GramTFError
    from gram_tf.pipeline import _require_study_folder

    folder = tmp_path / "study"
    _require_study_folder(folder)  # not there yet: fine
    folder.mkdir()
    _require_study_folder(folder)  # new and empty: fine
    (folder / "config.yaml").write_text("mine: true\n")
    with pytest.raises(GramTFError, match="already holds config.yaml, which gram-tf run did not write"):
        _require_study_folder(folder)
    res = CliRunner().invoke(main, ["run", "configs/quickstart.yaml", "--out", str(tmp_path), "--set",
                                    f"name={folder.name}"])
    assert res.exit_code == 2 and "did not write" in res.output and res.output.count("\n") == 1, res.output
    assert (folder / "config.yaml").read_text() == "mine: true\n"
    (folder / "stages").mkdir()  # a study's own folder, resumed
    _require_study_folder(folder)


def test_artifacts_of_a_study_whose_folder_is_gone_are_taken_over(tmp_path, capsys):
    import json

    import pytest

    from gram_tf.errors import GramTFError
    from gram_tf.pipeline import STUDY_FILE, _claim

    tfl, mine, other = tmp_path / "tfl", tmp_path / "mine", tmp_path / "other"
    for d in (tfl, mine, other):
        d.mkdir()
    (tfl / STUDY_FILE).write_text(json.dumps({"study": str(other.resolve())}))
    with pytest.raises(GramTFError, match="holds the artifacts of the study in"):
        _claim(tfl, mine)
    other.rmdir()  # the user deleted the old --out folder (or moved the project)
    _claim(tfl, mine)
    assert "no longer exists; this study takes it over" in capsys.readouterr().out
    assert json.loads((tfl / STUDY_FILE).read_text()) == {"study": str(mine.resolve())}


def test_unwritable_or_special_out_is_one_line(tmp_path):
    """`--set out=/proc/...` was a FileNotFoundError, `/sys/...` a PermissionError: now checked up front."""
    import pytest

    from gram_tf.errors import GramTFError

    (tmp_path / "file").write_text("x")
    for out, needle in (("/proc/gram_tf_test", "cannot be written"), ("/sys/gram_tf_test", "cannot be written"),
                        (str(tmp_path / "file"), "is a file")):
        with pytest.raises(GramTFError) as e:
            run_study(load_config(None, {"out": out, "tflite_dir": str(tmp_path / "t")}), progress=False)
        assert needle in str(e.value) and "\n" not in str(e.value)


def _splits(manifest):
    from gram_tf.data import read_manifest

    return {(r["path"], r["split"], r["group"]) for r in read_manifest(manifest)}


def test_train_data_and_run_split_a_folder_alike(tmp_path, monkeypatch):
    """`gram-tf train --data DIR` writes the split `gram-tf run` makes of DIR for the same seed: the fields
    of a synthetic specimen stay in one split in both, and a given group pattern applies in both."""
    import re

    import gram_tf.train
    from gram_tf import pipeline
    from gram_tf.data import SYNTH_GROUP_PATTERN
    from gram_tf.errors import GramTFError

    def no_training(*args, **kwargs):  # the split is written before training starts; stop there
        raise GramTFError("stopped before training")

    monkeypatch.setattr(gram_tf.train, "train", no_training)
    opts = {"seed": 3, "data": {"synth_per_class": 16, "synth_size": 16, "val": 0.25, "test": 0.25}}

    def run_split(root, **data):
        cfg = load_config(None, {**opts, "data": {**opts["data"], **data}})
        root.mkdir(parents=True)
        return pipeline._data_stage(cfg, root, pipeline._Stages(root, 1, progress=False))

    def train_split(folder, out, *extra):
        r = CliRunner().invoke(main, ["train", "--data", str(folder), "--backbone", "mobilenet_v1_025", "--weights",
                                      "none", "--out", str(out), "--set", "seed=3", "--set", "data.val=0.25",
                                      "--set", "data.test=0.25", *extra])
        assert "stopped before training" in r.output, r.output
        return out / "manifest.csv"

    study = tmp_path / "study"
    ran = _splits(run_split(study))  # `run` synthesises study/data (4 fields per specimen) and splits it
    trained = _splits(train_split(study / "data", tmp_path / "run"))
    assert trained == ran
    split_of = {}
    for path, split, group in trained:
        name = path.rsplit("/", 1)[-1]
        assert group == re.match(SYNTH_GROUP_PATTERN, name).group(1)
        assert split_of.setdefault(group, split) == split, group  # a specimen never spans two splits
    assert len(split_of) == 8 and {"train", "val", "test"} == set(split_of.values())

    # a folder of one's own: data.group_pattern (run) and --group-pattern (train) split alike
    from PIL import Image

    own = tmp_path / "own"
    for cls in ("a", "b"):
        (own / cls).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (16, 16), (i * 20, 100 if cls == "a" else 200, 50)).save(own / cls / f"P{i % 4}{cls}_{i:02d}.png")
    ran = _splits(run_split(tmp_path / "study2", dir=str(own), group_pattern=r"^(P\d\w)_"))
    trained = _splits(train_split(own, tmp_path / "run2", "--group-pattern", r"^(P\d\w)_"))
    assert trained == ran and len({g for _, _, g in trained}) == 8


def test_external_sets_are_checked_before_any_training(tmp_path, monkeypatch):
    """A style or a class the study does not know is one line before training; a class an external folder lacks
    is allowed. The check uses the study's classes (here a folder's own, a and b)."""
    import pytest
    from PIL import Image

    import gram_tf.pipeline
    from gram_tf.errors import GramTFError

    def no_training(*args, **kwargs):
        raise GramTFError("stopped before training")

    monkeypatch.setattr(gram_tf.pipeline, "train", no_training)
    own, lab = tmp_path / "own", tmp_path / "lab"
    for root, classes in ((own, "ab"), (lab, "a")):
        for cls in classes:
            (root / cls).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (16, 16), (i * 30, 90 if cls == "a" else 200, 50)).save(root / cls / f"{cls}{i}.png")

    def study(name, external):
        return load_config(None, {"name": name, "out": str(tmp_path / "runs"), "tflite_dir": str(tmp_path / "t" / name),
                                  "data": {"dir": str(own), "external": external}})

    with pytest.raises(GramTFError, match="stopped before training"):  # lab has no b: allowed
        run_study(study("ok", {"lab": str(lab)}), progress=False)
    with pytest.raises(GramTFError, match=r"external set 'syn' .*class folder 'gram_negative' is not a class of the "
                                          r"model \(a, b\)"):
        run_study(study("syn", {"syn": {"synth_style": "hue", "synth_per_class": 1}}), progress=False)
    with pytest.raises(GramTFError, match="unknown synthetic style 'sepia'"):
        run_study(study("sty", {"x": {"synth_style": "sepia"}}), progress=False)
    assert not (tmp_path / "runs" / "sty").exists()  # a name checked before any folder is made
    with pytest.raises(GramTFError, match="names an in-domain split"):
        run_study(study("val", {"val": str(lab)}), progress=False)
