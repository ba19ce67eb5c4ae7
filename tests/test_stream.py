"""gram_tf.deploy.stream and the streaming result files: a folder of images decoded in parallel with
inference, in order, in bounded memory, written row by row and resumable after a kill."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gram_tf.deploy import Classifier, ResultFile, decode_stream, predict_to_file
from gram_tf.deploy.imaging import load_image, load_resized, resize_image
from gram_tf.deploy.stream import ordered_map
from gram_tf.errors import GramTFError

REPO = Path(__file__).resolve().parents[1]
SIZE = 24
LABELS = ["gram_negative", "gram_positive"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import tensorflow as tf
    import tf_keras

    from gram_tf.deploy import embed_metadata

    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = tf_keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    out = tf_keras.layers.Dense(2, activation="softmax", kernel_initializer=tf_keras.initializers.RandomNormal(0, 2))(x)
    keras_model = tf_keras.Model(inp, out)
    blob = tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    rng = np.random.default_rng(0)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    folder = tmp_path_factory.mktemp("stream_model")
    meta = {"format": "gram_tf/1", "labels": LABELS, "input_size": SIZE,
            "preprocessing": {"resize": "squash", "channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}}
    (folder / "m_int8.tflite").write_bytes(embed_metadata(conv.convert(), meta))
    path = folder / "m.tflite"
    path.write_bytes(embed_metadata(blob, meta))
    return path


def _folder(root: Path, n: int, bad=(), size=40, seed=0) -> list[Path]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"img_{i:04d}.png"
        if i in bad:
            p.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (size, size + 7, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_ordered_map_keeps_order_and_bounds_the_queue():
    """A slow consumer never has more than max_pending items decoded ahead of it."""
    in_flight, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.001 * (i % 3))
        return i

    out = []
    with ThreadPoolExecutor(4) as pool:
        for i in ordered_map(work, range(60), pool, max_pending=5):
            with lock:
                in_flight[0] -= 1
            time.sleep(0.002)  # slow consumer
            out.append(i)
    assert out == list(range(60))
    assert peak[0] <= 5
    with pytest.raises(GramTFError, match="queue size"):
        list(ordered_map(work, range(3), ThreadPoolExecutor(1), 0))


def test_decode_stream_in_order_with_error_rows(tmp_path):
    paths = _folder(tmp_path / "imgs", 12, bad={3, 7})
    got = list(decode_stream(paths, SIZE, workers=3, queue_size=4))
    assert [d.path for d in got] == paths
    assert [i for i, d in enumerate(got) if d.image is None] == [3, 7]
    assert "cannot decode" in got[3].error and str(paths[3]) in got[3].error
    for d in got:
        if d.image is not None:
            np.testing.assert_array_equal(d.image, resize_image(load_image(d.path), SIZE, "squash"))


def test_predict_stream_equals_the_one_image_path(model, tmp_path):
    """Parallel decoding changes nothing: same rows, same order, same probabilities as classifying
    each image on its own (the path gram-tf predict used before)."""
    paths = _folder(tmp_path / "imgs", 40, bad={5})
    clf = Classifier(model, threads=1)
    rows = list(clf.predict_stream(paths, top_k=2, workers=2, queue_size=3, batch=7))
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert "error" in rows[5] and all("error" not in r for i, r in enumerate(rows) if i != 5)
    for p, r in zip(paths, rows):
        if "error" in r:
            continue
        one = clf.predict_arrays(resize_image(load_image(p), SIZE, "squash"))[0]
        assert r["probs"] == pytest.approx(dict(zip(LABELS, one.tolist())), abs=1e-6)
    results, errors = clf.predict_paths([tmp_path / "imgs"], top_k=2)
    assert [r["path"] for r in results] == [r["path"] for r in rows if "error" not in r]
    assert len(errors) == 1


def test_large_jpeg_decodes_at_reduced_scale_with_the_same_pixels(tmp_path):
    """Draft mode for a camera-sized JPEG: a fraction of the decoding, pixels within a few levels."""
    yy, xx = np.mgrid[0:1600, 0:2400]
    img = np.stack([(xx / 10) % 255, (yy / 7) % 255, ((xx + yy) / 13) % 255], -1).astype(np.uint8)
    p = tmp_path / "big.jpg"
    Image.fromarray(img).save(p, quality=92)
    exact = resize_image(load_image(p), 224, "squash")
    fast = load_resized(p, 224, "squash")
    assert load_image(p, min_side=448).shape[:2] == (800, 1200)  # 1/2 scale: 1/4 would make 400 < 448
    assert load_image(p, min_side=380).shape[:2] == (400, 600)  # 1/4 scale
    assert np.abs(exact.astype(int) - fast.astype(int)).mean() < 2.0


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_result_file_resumes_after_a_cut_line(model, tmp_path, suffix):
    paths = _folder(tmp_path / "imgs", 30, bad={4})
    clf = Classifier(model, threads=1)
    out = tmp_path / f"rows{suffix}"
    with ResultFile(out, clf.labels, model_sha256=clf.sha256) as rf:  # interrupted after 12 rows, the last one half-written
        for i, row in enumerate(clf.predict_stream(paths)):
            if i == 12:
                break
            rf.write(row)
    with open(out, "a") as fh:
        fh.write(str(paths[12])[:10])
    with pytest.raises(GramTFError, match="exists: pass --resume"):
        ResultFile(out, clf.labels, model_sha256=clf.sha256)
    summary = predict_to_file(clf, paths, out, resume=True, progress=False)
    assert summary["already_done"] == 12 and summary["classified"] + summary["errors"] == 18
    rows = _read_rows(out)
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert rows[4]["error"] and not rows[5]["error"]
    # a file changed since its row was written is classified again
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert predict_to_file(clf, paths, out, resume=True, progress=False)["already_done"] == 29


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [dict(json.loads(line), error=json.loads(line).get("error", "")) for line in path.read_text().splitlines()]
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_sigkill_then_resume_gives_one_row_per_image(model, tmp_path):
    """`gram-tf predict --out` killed with SIGKILL halfway, then `--resume`: every image exactly once."""
    first = _folder(tmp_path / "imgs", 1, size=SIZE)[0]
    for i in range(1, 3000):  # hard links: a big folder at no disk cost
        os.link(first, tmp_path / "imgs" / f"img_{i:04d}.png")
    out = tmp_path / "rows.csv"
    cmd = [sys.executable, "-m", "gram_tf.cli", "predict", str(model), str(tmp_path / "imgs"), "--out", str(out),
           "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if out.is_file() and out.read_text().count("\n") > 50:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    killed = proc.returncode == -signal.SIGKILL
    done_before = out.read_text().count("\n") - 1
    res = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1000:]
    rows = _read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in (tmp_path / "imgs").iterdir())
    assert len(rows) == 3000 == len({r["path"] for r in rows})
    assert killed and 0 < done_before < 3000  # rows are flushed every 256: the kill lands mid-run


@pytest.mark.parametrize("order", ["RGB", "BGR"])
@pytest.mark.parametrize("kind", ["m.tflite", "m_int8.tflite"])
def test_pixel_table_gives_the_normalised_input_exactly(model, order, kind):
    """The 256-level table per channel is bit-identical to normalize + quantize, float and int8."""
    from gram_tf.deploy import normalize

    clf = Classifier(model.parent / kind, preprocessing={"channel_order": order, "mean": [10, 120, 250], "std": [3, 60, 0.5]})
    x = np.random.default_rng(3).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    table = clf._input_from_pixels(x)
    assert table.dtype == (np.int8 if "int8" in kind else np.float32)
    np.testing.assert_array_equal(table, clf._quantize_input(normalize(x, clf.preprocessing)))
