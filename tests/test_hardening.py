"""Hostile-but-realistic input (issue 19): code in model files, bad values, files where folders are
expected, corrupted artifacts, temp files of a killed conversion. Each case is a one-line `error:`
(exit 2) or is handled, never a traceback, and nothing runs code from a model file."""
from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from gram_tf.cli import main
from gram_tf.config import ConvertConfig, load_config
from gram_tf.convert import convert_run
from gram_tf.errors import GramTFError


def _one_line_error(res, *needles):
    """Exit 2 and one `error:` line (progress bars drawn before it are erased with \\r, not lines)."""
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.split("\n") if line.strip()]
    assert len(lines) == 1 and lines[0].split("\r")[-1].startswith("error: "), res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], res.output


@pytest.fixture(scope="module")
def artifact(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hard_tfl")
    convert_run(tiny_run, ["fp32"], out_dir=out, cfg=ConvertConfig(check_samples=4), progress=False)
    return next(out.glob("*.tflite"))


def _run_with_model(tiny_run, tmp_path, save):
    """A copy of the tiny run whose model.keras is replaced by what `save(path)` writes."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "model.keras").unlink()
    save(run / "model.keras")
    return run


@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_a_lambda_layer_in_a_model_file_never_runs(tiny_run, tmp_path, fmt):
    import tf_keras

    marker = tmp_path / "code_ran"
    where = str(marker)  # a str closure: Keras serializes the lambda's code and closure into the file

    def save(path):
        inp = tf_keras.Input((4,))
        out = tf_keras.layers.Lambda(lambda x: (open(where, "w").close(), x)[1])(inp)
        model = tf_keras.Model(inp, out)
        marker.unlink(missing_ok=True)
        tmp = path.with_suffix(f".tmp.{fmt}")
        model.save(str(tmp))  # HDF5 or zip .keras, then under the run's model name
        tmp.rename(path)
        marker.unlink(missing_ok=True)

    run = _run_with_model(tiny_run, tmp_path, save)
    for args in (["convert", str(run), "--variants", "fp32", "--out", str(tmp_path / "tfl")],
                 ["prune", str(run), "--final-sparsity", "0.5"]):
        res = CliRunner().invoke(main, args)
        _one_line_error(res, "model.keras")
        assert ("HDF5" in res.output) if fmt == "h5" else ("(Lambda)" in res.output)  # names the layer
    assert not marker.exists(), "code from the model file ran"
    assert not list((tmp_path / "tfl").glob("*.tflite")) if (tmp_path / "tfl").exists() else True


def _crafted(tiny_run, edit=None, members=None):
    """A save() for _run_with_model: the tiny run's .keras with its config edited, or these zip members."""
    import json
    import zipfile

    def save(path):
        with zipfile.ZipFile(tiny_run / "model.keras") as zf:
            files = {n: zf.read(n) for n in zf.namelist()}
        if edit is not None:
            files["config.json"] = json.dumps(edit(json.loads(files["config.json"]))).encode()
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in (members(files) if members else files).items():
                zf.writestr(name, data)
    return save


def _first_layer_class(module, cls):
    def edit(config):
        layer = config["config"]["layers"][1]
        layer.update(module=module, class_name=cls, registered_name=None)
        return config
    return edit


def _activation(node):
    def edit(config):
        config["config"]["layers"][1]["config"]["activation"] = node
        return config
    return edit


CANARY = "gram_tf_canary_module"


def _nested(depth):
    node: list = []
    for _ in range(depth):
        node = [node]
    return node


@pytest.mark.parametrize("case, edit, members, needle", [
    ("B7 module import", _first_layer_class(CANARY, "Nope"), None, CANARY),
    ("builtins function as the model", lambda c: {"class_name": "function", "module": "builtins", "config": "eval"},
     None, "not a Keras model"),
    ("os.system as an activation", _activation({"module": "os", "class_name": "function", "config": "system",
                                                "registered_name": "function"}), None, "module os"),
    ("builtins eval as an activation", _activation({"module": "builtins", "class_name": "function",
                                                    "config": "eval"}), None, "builtins"),
    ("TFOpLambda writing a file", _first_layer_class("keras.layers", "TFOpLambda"), None, "TFOpLambda"),
    ("a gram_tf module with a class it lacks", _first_layer_class("gram_tf.models.vit_layers", "Popen"), None,
     "does not define it"),
    ("not a zip", None, "notzip", "not a .keras (zip) archive"),
    ("no config.json", None, lambda f: {k: v for k, v in f.items() if k != "config.json"}, "without config.json"),
    ("garbage weights", None, lambda f: {**f, "model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"x" * 500}, "weights"),
    ("config not JSON", None, lambda f: {**f, "config.json": b"{" * 5}, "not valid JSON"),
    ("config nested past any model", lambda c: {**c, "deep": _nested(300)}, None, "nests deeper"),
])
def test_a_model_file_imports_nothing_and_fails_in_one_line(tiny_run, tmp_path, monkeypatch, case, edit, members,
                                                             needle):
    """Safe loading: a .keras config is checked against the allowlist before tf_keras reads it (B7: a
    model file made gram_tf import any installed module), and a damaged archive is one line."""
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{CANARY}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    if members == "notzip":
        save = lambda path: path.write_bytes(b"PK\x03\x04 not really a zip")  # noqa: E731
    else:
        save = _crafted(tiny_run, edit, members)
    run = _run_with_model(tiny_run, tmp_path, save)
    if case == "TFOpLambda writing a file":  # a TFOpLambda that calls io.write_file
        import json
        import zipfile

        with zipfile.ZipFile(run / "model.keras") as zf:
            files = {n: zf.read(n) for n in zf.namelist()}
        config = json.loads(files["config.json"])
        config["config"]["layers"][1]["config"] = {"name": "w", "function": "io.write_file"}
        files["config.json"] = json.dumps(config).encode()
        with zipfile.ZipFile(run / "model.keras", "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    res = CliRunner().invoke(main, ["convert", str(run), "--variants", "fp32", "--out", str(tmp_path / "tfl")])
    _one_line_error(res, "model.keras", needle)
    assert not marker.exists() and CANARY not in sys.modules, "the model file made gram_tf import a module"


@pytest.mark.parametrize("sets, needle", [
    (["backbones=[123]"], "backbones"), (["backbones=[null]"], "backbones"), (["backbones={a: 1}"], "backbones"),
    (["train.augment_views=-1"], "augment_views"), (["train.learning_rate=-1"], "learning_rate"),
    (["train.learning_rate=.nan"], "learning_rate"), (["train.input_size=0"], "input_size"),
    (["backbones=[mobilenet_v2_O35]"], "did you mean"), (["convert.variants=[int9]"], "int9"),
])
def test_bad_values_are_one_line_errors_before_any_work(tmp_path, sets, needle):
    res = CliRunner().invoke(main, ["run", "configs/quickstart.yaml", "--out", str(tmp_path / "study"),
                                    *[a for s in sets for a in ("--set", s)]])
    _one_line_error(res, needle)
    assert not (tmp_path / "study").exists(), "work started before the config was checked"


def test_numbers_are_read_as_people_type_them():
    cfg = load_config("configs/quickstart.yaml", ["prune.learning_rate=1e-5", "train.learning_rate=5E-3"])
    assert cfg.prune.learning_rate == 1e-5 and cfg.train.learning_rate == 5e-3


def test_a_binary_config_file_is_one_line(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00")
    _one_line_error(CliRunner().invoke(main, ["run", str(cfg)]), "not a text file")
    with pytest.raises(GramTFError, match="not a text file"):
        load_config(cfg)


def test_out_naming_a_file(tmp_path, synth_manifest, synth_dir):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    _one_line_error(CliRunner().invoke(main, ["train", "--manifest", str(synth_manifest), "--backbone",
                                              "mobilenet_v1_050", "--out", str(a_file)]), "is a file")
    _one_line_error(CliRunner().invoke(main, ["run", "configs/quickstart.yaml", "--out", str(a_file)]), "is a file")
    _one_line_error(CliRunner().invoke(main, ["data", "split", str(synth_dir), "--out",
                                              str(a_file / "manifest.csv")]), "is a file")
    _one_line_error(CliRunner().invoke(main, ["data", "split", str(synth_dir), "--out", str(tmp_path)]), "folder")


def test_a_typo_in_train_leaves_nothing_behind(tmp_path, synth_dir):
    res = CliRunner().invoke(main, ["train", "--data", str(synth_dir), "--backbone", "mobilenet_v9",
                                    "--out", str(tmp_path / "run")])
    _one_line_error(res, "mobilenet_v9")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("k", ["0", "-1"])
def test_predict_top_k_below_one(artifact, synth_dir, k):
    _one_line_error(CliRunner().invoke(main, ["predict", str(artifact), str(synth_dir), "--top-k", k]), "--top-k")


def test_a_corrupted_artifact_is_refused_unless_told(artifact, tmp_path, synth_dir):
    copy = tmp_path / "models"
    shutil.copytree(artifact.parent, copy)
    bad = copy / artifact.name
    data = bytearray(bad.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(4096)  # weights overwritten, flatbuffer still readable
    bad.write_bytes(bytes(data))
    image = next(p for p in synth_dir.rglob("*.png"))
    _one_line_error(CliRunner().invoke(main, ["predict", str(bad), str(image)]), "sha256", "--no-verify")
    res = CliRunner().invoke(main, ["predict", str(bad), str(image), "--no-verify"])
    assert res.exit_code == 0, res.output
    ok = CliRunner().invoke(main, ["predict", str(artifact), str(image)])
    assert ok.exit_code == 0, ok.output


def test_temp_files_of_a_killed_conversion_are_never_benchmarked(tiny_run, tmp_path):
    from gram_tf.bench import discover

    out = tmp_path / "tfl"
    convert_run(tiny_run, ["fp32"], out_dir=out, cfg=ConvertConfig(check_samples=4), progress=False)
    stale = out / f".{next(out.glob('*.tflite')).name}.x1y2z3.tflite"  # io_utils.atomic_path's temp name
    stale.write_bytes(b"half written")
    assert stale not in discover([out])
    convert_run(tiny_run, ["fp32"], out_dir=out, cfg=ConvertConfig(check_samples=4), progress=False,
                skip_existing=True)
    assert not stale.exists()


def test_a_second_writer_gets_the_holder_and_a_stale_lock_is_taken_over(tiny_run, tmp_path):
    import json
    import subprocess
    import sys

    from gram_tf.io_utils import LOCK_NAME

    out = tmp_path / "tfl"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "started": "2026-11-27T10:00:00"}))
        with pytest.raises(GramTFError, match=f"being written by process {holder.pid}"):
            convert_run(tiny_run, ["fp32"], out_dir=out, cfg=ConvertConfig(check_samples=4), progress=False)
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and taken over; released after the run
    convert_run(tiny_run, ["fp32"], out_dir=out, cfg=ConvertConfig(check_samples=4), progress=False)
    assert list(out.glob("*.tflite")) and not (out / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_held_and_a_waiting_writer_waits(tmp_path):
    """On a shared file system the holder's pid means nothing here: its lock is not stale. `wait` waits for
    a holder to let go (the conversions of `gram-tf run --executor ray` merge one manifest)."""
    import json
    import threading
    import time

    from gram_tf.io_utils import LOCK_NAME, folder_lock

    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": 2 ** 30, "host": "node-b", "started": "2026-12-06T19:00:00"}))  # no such pid here
    with pytest.raises(GramTFError, match=r"being written by process \d+ on node-b"):
        with folder_lock(tmp_path):
            pass
    threading.Timer(0.5, lock.unlink).start()
    start = time.monotonic()
    with folder_lock(tmp_path, wait=20):
        waited = time.monotonic() - start
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert 0.4 < waited < 20 and not lock.exists()


def test_a_shared_artifact_folder_clears_only_the_runs_own_temp_files(tiny_run, tmp_path):
    out = tmp_path / "tfl"
    out.mkdir()
    theirs = out / ".other__fp32.tflite.b2.tflite"
    convert_run(tiny_run, ["fp32"], out_dir=out, cfg=ConvertConfig(check_samples=4), progress=False, shared=True)
    stem = next(out.glob("*.tflite")).stem
    mine = out / f".{stem}.tflite.a1.tflite"
    for f in (mine, theirs):
        f.write_bytes(b"half written")
    convert_run(tiny_run, ["fp32"], out_dir=out, cfg=ConvertConfig(check_samples=4), progress=False, shared=True)
    assert not mine.exists() and theirs.exists()  # another conversion may be writing that one right now


def test_huge_images_are_refused_from_their_header(tmp_path, monkeypatch, capfd):
    """Above the pixel limit an image is an error row before any decoding (bounded memory), with no
    raw Pillow warning on screen; the limit is the user's to raise."""
    import numpy as np
    from PIL import Image

    from gram_tf.data import probe_image
    from gram_tf.deploy.imaging import MAX_PIXELS_ENV, load_image, load_resized

    big = tmp_path / "slide.png"
    Image.fromarray(np.zeros((3000, 4000, 3), np.uint8)).save(big)  # 12 Mpx
    monkeypatch.setenv(MAX_PIXELS_ENV, "10000000")
    with pytest.raises(GramTFError, match="4000x3000 = 12 Mpx is above the 10 Mpx limit"):
        load_resized(big, 64)
    size, err = probe_image(big)
    assert size is None and MAX_PIXELS_ENV in err
    monkeypatch.setenv(MAX_PIXELS_ENV, "20000000")
    assert load_image(big).shape == (3000, 4000, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(GramTFError, match="not a number of pixels"):
        load_image(big)
    assert "DecompressionBombWarning" not in capfd.readouterr().err


@pytest.mark.parametrize("args", [
    lambda long, art: ["predict", str(art), long + ".png"],
    lambda long, art: ["predict", long + ".tflite", "x.png"],
    lambda long, art: ["data", "check", long],
    lambda long, art: ["run", long + ".yaml"],
    lambda long, art: ["train", "--data", ".", "--backbone", "mobilenet_v2_035", "--weights", long + ".h5",
                       "--out", "/tmp/never"],
])
def test_a_name_longer_than_the_file_system_allows_is_one_line(artifact, tmp_path, args):
    long = str(tmp_path / ("n" * 300))
    res = CliRunner().invoke(main, args(long, artifact))
    _one_line_error(res)
    assert len(res.output) < 600  # the name, shortened or whole, and what to do
