"""ImageFolder scanning, checks, splits and the tf.data pipeline."""
import csv
import shutil
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from gram_tf import data
from gram_tf.errors import GramTFError

from .conftest import REAL_DATA, shared_or_skip


def _folder(tmp_path, per_class=6, groups=3):
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for cls, colour in (("gram_negative", (220, 90, 120)), ("gram_positive", (90, 40, 160))):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = (np.array(colour) + rng.integers(-20, 20, (40, 40, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"P{i % groups:02d}_img{i:03d}.png")
    return root


def test_odd_image_files_in_a_folder_all_decode(tmp_path):
    """Every mode the ImageFolder reader promises: the split keeps them all as readable."""
    root = tmp_path / "odd"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rgb = np.random.default_rng(1).integers(0, 255, (50, 70, 3), np.uint8)
    Image.fromarray(rgb).convert("RGBA").save(root / "a" / "rgba.PNG")
    Image.fromarray(rgb).convert("L").save(root / "a" / "grey.jpg")
    Image.fromarray(rgb).convert("P").save(root / "a" / "palette.bmp")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(root / "b" / "sixteen.tif")
    Image.fromarray(rgb).convert("CMYK").save(root / "b" / "cmyk.JPEG")
    Image.fromarray(np.zeros((4000, 32, 3), np.uint8)).save(root / "b" / "tall.tiff")
    rows = data.split_dataset(root, val=0.0, test=0.0, progress=False)
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    x, y, kept, errors = data.load_images(rows, 32, progress=False)
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.uint8 and not errors


def test_check_reports_corrupt_zero_byte_duplicates(tmp_path):
    root = _folder(tmp_path)
    (root / "gram_negative" / "empty.png").write_bytes(b"")
    good = (root / "gram_negative" / "P00_img000.png").read_bytes()
    (root / "gram_negative" / "truncated.png").write_bytes(good[: len(good) // 2])
    shutil.copy(root / "gram_positive" / "P00_img000.png", root / "gram_positive" / "copy.png")
    report = data.check_dataset(root, progress=False)
    bad = {r["path"].split("/")[-1]: r["error"] for r in report["unreadable"]}
    assert set(bad) == {"empty.png", "truncated.png"}
    assert "empty.png" in bad["empty.png"] and "0 bytes" in bad["empty.png"]
    assert any(any(p.endswith("copy.png") for p in g) for g in report["duplicates"])
    assert report["ok"]  # bad files are reported, the dataset is still usable
    assert report["per_class"]["gram_negative"]["readable"] == 6


def test_check_fails_on_empty_class_and_single_class(tmp_path):
    root = _folder(tmp_path)
    (root / "gram_variable").mkdir()
    report = data.check_dataset(root, progress=False)
    assert not report["ok"] and any("gram_variable" in p for p in report["problems"])
    with pytest.raises(GramTFError, match="gram_variable"):
        data.split_dataset(root, progress=False)
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one / "only" / "x.png")
    with pytest.raises(GramTFError, match="at least 2"):
        data.split_dataset(one, progress=False)


@pytest.mark.parametrize("make, needle", [
    (lambda root: shutil.copytree(root / "gram_positive", root / "pos\nitive"), r"'pos\\nitive'.*control character"),
    (lambda root: shutil.copytree(root / "gram_positive", root / " "), "no visible name"),
    (lambda root: (root / "loopclass").symlink_to(".", target_is_directory=True), "link to the data folder"),
    (lambda root: (root / "parent").symlink_to("..", target_is_directory=True), "link to the data folder"),
    (lambda root: (root / "twin").symlink_to("gram_positive", target_is_directory=True), "same folder"),
])
def test_class_folders_that_cannot_be_classes_are_refused(tmp_path, make, needle):
    """A class name must fit one line of labels.txt; a link is never a class of duplicates."""
    from click.testing import CliRunner

    from gram_tf.cli import main

    root = _folder(tmp_path)
    make(root)
    with pytest.raises(GramTFError, match=needle):
        data.split_dataset(root, progress=False)
    for args in (["data", "check", str(root)], ["data", "split", str(root), "--out", str(tmp_path / "m.csv")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and res.output.count("\n") == 1 and res.output.startswith("error: "), res.output
    assert not (tmp_path / "m.csv").exists()


def test_split_reproducible_stratified_and_seed_dependent(tmp_path):
    root = _folder(tmp_path, per_class=20, groups=20)
    a = data.split_dataset(root, val=0.2, test=0.2, seed=3, progress=False)
    b = data.split_dataset(root, val=0.2, test=0.2, seed=3, progress=False)
    c = data.split_dataset(root, val=0.2, test=0.2, seed=4, progress=False)
    data.write_manifest(a, tmp_path / "a.csv")
    data.write_manifest(b, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert [r["split"] for r in a] != [r["split"] for r in c]
    summary = data.summarize_split(a)
    for cls in ("gram_negative", "gram_positive"):
        assert summary["test"][cls] == 4 and summary["val"][cls] == 4 and summary["train"][cls] == 12


def test_group_pattern_never_splits_a_group(tmp_path):
    root = _folder(tmp_path, per_class=24, groups=6)
    rows = data.split_dataset(root, val=0.2, test=0.3, seed=0, group_pattern=r"^(P\d+)_", progress=False)
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert {"train", "val", "test"} <= {r["split"] for r in rows}
    with pytest.raises(GramTFError, match="not a valid regex"):
        data.split_dataset(root, group_pattern="(", progress=False)


def test_a_synthetic_folder_is_split_by_specimen_unless_told_otherwise(tmp_path):
    root = tmp_path / "synth"
    data.synthesize_dataset(root, per_class=12, size=16, seed=0, progress=False)  # 3 specimens x 4 fields
    rows = data.split_dataset(root, val=0.25, test=0.25, seed=0, progress=False)
    given = data.split_dataset(root, val=0.25, test=0.25, seed=0, group_pattern=data.SYNTH_GROUP_PATTERN,
                               progress=False)
    assert [(r["path"], r["split"], r["group"]) for r in rows] == [(r["path"], r["split"], r["group"]) for r in given]
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r["group"]].add(r["split"])
    assert len(splits_of) == 6 and all(len(s) == 1 for s in splits_of.values())
    off = data.split_dataset(root, val=0.25, test=0.25, seed=0, group_pattern="", progress=False)
    assert len({r["group"] for r in off}) == 24  # '' turns grouping off: each file alone
    # one foreign file and the folder is no longer data synth's: no default pattern
    Image.new("RGB", (16, 16)).save(root / "gram_positive" / "extra.png")
    assert len({r["group"] for r in data.split_dataset(root, val=0.25, test=0.25, progress=False)}) == 25
    assert data.check_dataset(root, progress=False)["warnings"]  # ...and its names look grouped


def _named(tmp_path, names):
    root = tmp_path / "named"
    for cls in ("cocci", "rods"):
        (root / cls).mkdir(parents=True)
        for i, name in enumerate(names):
            Image.new("RGB", (8, 8), (i, 0, 0) if cls == "cocci" else (0, i, 0)).save(root / cls / name)
    return root


@pytest.mark.parametrize("names, example", [
    ([f"photo{p}-tile{t}.jpg" for p in range(4) for t in range(3)], "photo3-tile0.jpg"),
    ([f"P{p:02d}_{i}.png" for p in range(5) for i in range(2)], "P04_0.png"),
    ([f"slide{p}__f{i}.png" for p in range(3) for i in range(4)] + ["other.png"], "slide2__f0.png"),
])
def test_check_warns_once_when_names_look_grouped(tmp_path, names, example):
    root = _named(tmp_path, names)
    warnings = data.check_dataset(root, progress=False)["warnings"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert example in warnings[0] and "--group-pattern" in warnings[0], warnings
    # a pattern given silences it, the one the warning suggests included
    for pattern in (r"^(.+?)[-_]", data.dataset.SUFFIX_GROUP_PATTERN):
        assert data.check_dataset(root, progress=False, group_pattern=pattern)["warnings"] == []
    with pytest.raises(GramTFError, match="not a valid regex"):
        data.check_dataset(root, progress=False, group_pattern="(")


@pytest.mark.parametrize("names", [
    [f"IMG_{i:04d}.jpg" for i in range(12)],  # one camera counter per class, not groups
    ["alpha.png", "beta.png", "gamma.png", "delta.png", "img1.png", "img2.png"],
    [f"P{p:02d}_{i}.png" for p in range(2) for i in range(3)] + [f"x{i}.png" for i in range(8)],  # too few groups
])
def test_check_does_not_warn_when_names_look_independent(tmp_path, names):
    assert data.check_dataset(_named(tmp_path, names), progress=False)["warnings"] == []


def test_check_does_not_warn_on_a_synthetic_folder(tmp_path):
    data.synthesize_dataset(tmp_path / "s", per_class=8, size=16, seed=0, progress=False)
    assert data.check_dataset(tmp_path / "s", progress=False)["warnings"] == []


def test_manifest_records_corrupt_file_and_later_stages_skip_it(tmp_path):
    root = _folder(tmp_path)
    (root / "gram_positive" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = data.split_dataset(root, val=0.2, test=0.2, progress=False)
    path = tmp_path / "m.csv"
    data.write_manifest(rows, path)
    with open(path) as fh:
        recs = list(csv.DictReader(fh))
    assert set(recs[0]) == set(data.MANIFEST_COLUMNS)
    broken = [r for r in recs if r["path"].endswith("broken.jpg")]
    assert broken[0]["split"] == "excluded" and "broken.jpg" in broken[0]["status"]
    assert all(len(r["sha256"]) == 64 for r in recs)
    rows = data.read_manifest(path)
    x, y, kept = data.load_split(rows, "train", 32, progress=False)
    assert len(x) == len(kept) > 0
    assert not any(r["path"].endswith("broken.jpg") for r in kept)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(GramTFError, match="not found"):
        data.read_manifest(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx.png,a\n")
    with pytest.raises(GramTFError, match="lacks column"):
        data.read_manifest(bad)


def test_tf_pipeline_normalises_and_augments_deterministically():
    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), np.uint8)
    pre = {"channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}
    plain = np.concatenate([b[0].numpy() for b in data.make_dataset(images, None, pre, 4)])
    np.testing.assert_allclose(plain, images / 127.5 - 1.0, atol=1e-5)
    aug1 = np.concatenate([b[0].numpy() for b in data.make_dataset(images, None, pre, 4, augment=True, seed=1)])
    aug2 = np.concatenate([b[0].numpy() for b in data.make_dataset(images, None, pre, 4, augment=True, seed=1)])
    np.testing.assert_allclose(aug1, aug2)
    assert aug1.shape == plain.shape and not np.allclose(aug1, plain)
    assert aug1.min() >= -1.0001 and aug1.max() <= 1.0001
    bgr = {"channel_order": "BGR", "mean": [0.0] * 3, "std": [1.0] * 3}
    out = next(iter(data.make_dataset(images, None, bgr, 6)))[0].numpy()
    np.testing.assert_allclose(out, images[..., ::-1].astype(np.float32))


def test_augmentation_keeps_colour_mostly():
    """Hue shifts stay small: the mean colour of a violet image stays violet."""
    violet = np.zeros((8, 32, 32, 3), np.uint8) + np.array([90, 40, 160], np.uint8)
    pre = {"channel_order": "RGB", "mean": [0.0] * 3, "std": [1.0] * 3}
    out = np.concatenate([b[0].numpy() for b in data.make_dataset(violet, None, pre, 8, augment=True, seed=0)])
    means = out.reshape(8, -1, 3).mean(1)
    assert np.all(means[:, 2] > means[:, 0]) and np.all(means[:, 0] > means[:, 1])


def test_real_micrographs_decode():
    root = shared_or_skip(REAL_DATA)
    from gram_tf.deploy.imaging import load_image, resize_image

    files = sorted(root.rglob("*.JPG"))[:2] + sorted(root.rglob("*.png"))
    assert files
    for f in files:
        img = load_image(f)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) > 500
        small = resize_image(img, 64, "center_crop")
        assert small.shape == (64, 64, 3)
    rows = data.split_dataset(root / "gramstainr_reference", val=0.2, test=0.2, progress=False)
    assert all(r["status"] == "ok" for r in rows) and len(rows) == 60
