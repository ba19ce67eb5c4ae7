"""Tests for gram_tf.data.synth, the procedural Gram-stain micrograph generator."""
import re

import numpy as np
import pytest
from PIL import Image

from gram_tf.data import synth
from gram_tf.errors import GramTFError
from gram_tf.data.synth import CLASSES, SpecimenStyle, render_micrograph, synthesize_dataset

NAME_RE = re.compile(r"^(gram_negative|gram_positive)_s(\d{4})_f(\d{2})\.png$")  # the documented format
GROUP_RE = re.compile(synth.GROUP_PATTERN)


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def _bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in _files(root)}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    summary = synthesize_dataset(out, per_class=10, size=64, seed=7, fields_per_specimen=4,
                                 progress=False)
    return out, summary


@pytest.fixture(scope="module")
def colour_set():
    """40 fields per class at 64 px (10 specimens of 4 fields each), rendered in memory."""
    imgs, labels = [], []
    for ci, name in enumerate(CLASSES):
        gram = name.split("_")[1]
        for i in range(40):
            sp, f = divmod(i, 4)
            st = synth.specimen_style(11, ci, sp, gram)
            im = render_micrograph(synth.field_rng(11, ci, sp, f), gram, 64, st)
            imgs.append(np.asarray(im, dtype=np.float64))
            labels.append(ci)
    return np.stack(imgs), np.array(labels)


# -- dataset layout ---------------------------------------------------------------------------------
def test_summary_and_counts(small_set):
    out, summary = small_set
    assert summary == {"out_dir": str(out), "classes": {c: 10 for c in CLASSES}, "size": 64,
                       "seed": 7, "style": "default", "n_written": 20, "n_skipped": 0}
    for c in CLASSES:
        assert len(list((out / c).glob("*.png"))) == 10
    assert sorted(p.name for p in out.iterdir()) == sorted(CLASSES)


def test_file_names_and_specimen_groups(small_set):
    out, _ = small_set
    for c in CLASSES:
        names = sorted(p.name for p in (out / c).iterdir())
        parsed = [NAME_RE.match(n) for n in names]
        assert all(parsed), names
        assert {m.group(1) for m in parsed} == {c}
        pairs = sorted((int(m.group(2)), int(m.group(3))) for m in parsed)
        # 10 fields, 4 per specimen -> specimens 0,1 complete and specimen 2 with fields 0,1
        assert pairs == [(s, f) for s in range(3) for f in range(4)][:10]
        groups = {}
        for n in names:
            groups.setdefault(GROUP_RE.search(n).group(1), []).append(n)
        assert {g: len(v) for g, v in groups.items()} == {f"{c}_s0000": 4, f"{c}_s0001": 4, f"{c}_s0002": 2}
    assert synth.is_synthetic_folder(CLASSES, [p.name for p in _files(out)])


def test_file_name_format_and_group_pattern_agree():
    """A name the format makes is a synthetic name, and the group pattern gives its class + specimen."""
    group = re.compile(synth.GROUP_PATTERN)
    for cls in CLASSES:
        for specimen, field in [(0, 0), (7, 3), (12, 10), (12345, 99)]:
            name = synth.FILE_NAME_FORMAT.format(cls=cls, specimen=specimen, field=field)
            assert NAME_RE.match(name) or specimen > 9999, name
            assert synth.NAME_PATTERN.match(name), name
            assert group.search(name).group(1) == f"{cls}_s{specimen:04d}", name
    # fields of one specimen share a group; the same specimen number in the other class does not
    names = [synth.FILE_NAME_FORMAT.format(cls=c, specimen=3, field=f) for c in CLASSES for f in (0, 1)]
    assert len({group.search(n).group(1) for n in names}) == len(CLASSES)


def test_docs_show_the_group_pattern_and_where_it_is_defined():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text(encoding="utf-8")
    assert f"`{synth.GROUP_PATTERN}`" in doc and "gram_tf/data/synth/names.py" in doc


def test_is_synthetic_folder_needs_synthetic_classes_and_names():
    good = [synth.FILE_NAME_FORMAT.format(cls=c, specimen=1, field=2) for c in CLASSES]
    assert synth.is_synthetic_folder(list(CLASSES), good)
    assert not synth.is_synthetic_folder(list(CLASSES), good + ["IMG_0001.jpg"])
    assert not synth.is_synthetic_folder(["cocci", "rods"], good)
    assert not synth.is_synthetic_folder(list(CLASSES), [])


def test_images_are_rgb_and_sized(small_set):
    out, _ = small_set
    for p in _files(out):
        with Image.open(p) as im:
            assert im.format == "PNG"
            assert im.mode == "RGB"
            assert im.size == (64, 64)


def test_no_temporary_files_left(small_set):
    out, _ = small_set
    assert not [p for p in _files(out) if ".tmp" in p.name]


# -- determinism ----------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(small_set, tmp_path):
    out, _ = small_set
    synthesize_dataset(tmp_path / "again", per_class=10, size=64, seed=7, progress=False)
    assert _bytes(tmp_path / "again") == _bytes(out)


def test_different_seed_gives_different_images(small_set, tmp_path):
    out, _ = small_set
    synthesize_dataset(tmp_path / "other", per_class=10, size=64, seed=8, progress=False)
    a, b = _bytes(out), _bytes(tmp_path / "other")
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a) == len(a)


def test_file_content_independent_of_per_class(small_set, tmp_path):
    out, _ = small_set
    synthesize_dataset(tmp_path / "few", per_class=3, size=64, seed=7, progress=False)
    few = _bytes(tmp_path / "few")
    full = _bytes(out)
    assert len(few) == 6
    assert all(full[k] == v for k, v in few.items())


def test_file_matches_documented_seeding(small_set):
    """Each file is rendered from SeedSequence([seed, class_index, specimen, field])."""
    out, _ = small_set
    ci, name = 1, CLASSES[1]
    style = synth.specimen_style(7, ci, 1, "positive")
    rng = np.random.default_rng(np.random.SeedSequence([7, ci, 1, 2]))
    im = render_micrograph(rng, "positive", 64, style)
    with Image.open(out / name / f"{name}_s0001_f02.png") as disk:
        assert np.array_equal(np.asarray(disk), np.asarray(im))


def test_render_is_deterministic_per_rng():
    a = render_micrograph(np.random.default_rng(5), "negative", 48)
    b = render_micrograph(np.random.default_rng(5), "negative", 48)
    c = render_micrograph(np.random.default_rng(6), "negative", 48)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


# -- resume and atomic writes ---------------------------------------------------------------------
def test_resume_skips_existing_files(tmp_path):
    out = tmp_path / "ds"
    first = synthesize_dataset(out, per_class=4, size=32, seed=1, progress=False)
    assert (first["n_written"], first["n_skipped"]) == (8, 0)
    before = _bytes(out)
    again = synthesize_dataset(out, per_class=4, size=32, seed=1, progress=False)
    assert (again["n_written"], again["n_skipped"]) == (0, 8)
    assert again["classes"] == {c: 4 for c in CLASSES}
    assert _bytes(out) == before

    # a deleted file is regenerated identically; a stale temp file from a crash is cleaned up
    victim = out / "gram_positive" / "gram_positive_s0000_f02.png"
    victim.unlink()
    stale = out / "gram_negative" / "gram_negative_s0000_f01.tmp.png"
    stale.write_bytes(b"half a png")
    third = synthesize_dataset(out, per_class=4, size=32, seed=1, progress=False)
    assert (third["n_written"], third["n_skipped"]) == (1, 7)
    assert _bytes(out) == before

    # growing the dataset only writes the new files
    more = synthesize_dataset(out, per_class=6, size=32, seed=1, progress=False)
    assert (more["n_written"], more["n_skipped"]) == (4, 8)


def test_progress_bar_counts_every_image(tmp_path, capsys):
    summary = synthesize_dataset(tmp_path / "p", per_class=1, size=16, seed=0, progress=True)
    assert summary["n_written"] == 2
    err = capsys.readouterr().err
    assert "synth" in err and "2/2" in err, err
    synthesize_dataset(tmp_path / "q", per_class=1, size=16, seed=0, progress=False)
    assert capsys.readouterr().err == ""


# -- argument validation --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, option", [
    ({"per_class": 0}, "--per-class"),
    ({"per_class": -3}, "--per-class"),
    ({"per_class": 2.5}, "--per-class"),
    ({"per_class": 2, "size": 15}, "--size"),
    ({"per_class": 2, "size": 4097}, "--size"),
    ({"per_class": 2, "size": "64"}, "--size"),
    ({"per_class": 2, "seed": -1}, "--seed"),
    ({"per_class": 2, "fields_per_specimen": 0}, "fields_per_specimen"),
    ({"per_class": 2, "style": "sepia"}, "faded"),  # an unknown style names the ones there are
])
def test_bad_arguments_raise(tmp_path, kwargs, option):
    with pytest.raises(GramTFError) as exc:
        synthesize_dataset(tmp_path / "bad", progress=False, **kwargs)
    msg = str(exc.value)
    assert option in msg and "\n" not in msg
    assert not (tmp_path / "bad").exists()


def test_render_rejects_bad_inputs():
    with pytest.raises(GramTFError, match="gram"):
        render_micrograph(np.random.default_rng(0), "variable", 32)
    with pytest.raises(GramTFError, match="--size"):
        render_micrograph(np.random.default_rng(0), "positive", 8)


def test_out_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(GramTFError, match="not a directory"):
        synthesize_dataset(f, per_class=1, size=16, progress=False)


# -- rendering ------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 33, 200])
def test_render_sizes(size):
    im = render_micrograph(np.random.default_rng(size), "positive", size)
    assert im.mode == "RGB" and im.size == (size, size)


def test_specimen_style_is_shared_and_valid():
    st = SpecimenStyle.sample(np.random.default_rng(3), "negative")
    assert 18 <= st.fov_um <= 60
    assert len(st.morphology) == len(synth.ARRANGEMENTS)
    assert abs(sum(st.morphology) - 1) < 1e-9
    assert 0 <= st.over_decolourised_fraction <= 1 and 0 <= st.cv_retained_negative <= 1
    # fields of one specimen differ (own rng) but share the style
    a = render_micrograph(np.random.default_rng(1), "negative", 48, st)
    b = render_micrograph(np.random.default_rng(2), "negative", 48, st)
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    assert synth.specimen_style(0, 1, 5, "positive") == synth.specimen_style(0, 1, 5, "positive")
    assert synth.specimen_style(0, 1, 5, "positive") != synth.specimen_style(0, 1, 6, "positive")


def test_background_is_pale():
    """Most of a field is pale background."""
    for seed in range(6):
        a = np.asarray(render_micrograph(np.random.default_rng(seed), "positive", 96), float)
        assert np.median(a.mean(axis=2)) > 120


# -- colour: learnable, but not by mean colour alone ------------------------------------------------
def _dark_blue_minus_red(imgs):
    """Mean (B - R) over each image's stained pixels (clearly darker than its background)."""
    out = []
    for a in imgs:
        lum = a.mean(axis=2)
        m = lum < 0.8 * np.median(lum)
        out.append((a[..., 2][m] - a[..., 0][m]).mean() if m.sum() >= 3 else np.nan)
    return np.array(out)


def test_positive_cells_are_more_violet(colour_set):
    imgs, y = colour_set
    br = _dark_blue_minus_red(imgs)
    pos, neg = np.nanmean(br[y == 1]), np.nanmean(br[y == 0])
    assert pos > neg + 15, (pos, neg)


def test_mean_colour_alone_is_not_a_perfect_cue(colour_set):
    imgs, y = colour_set
    feats = imgs.reshape(len(imgs), -1, 3).mean(axis=1)
    centres = np.stack([feats[y == k].mean(axis=0) for k in (0, 1)])
    pred = np.argmin(((feats[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    acc = (pred == y).mean()
    assert 0.55 <= acc <= 0.95, acc
    # the colour of the stained cells is a much better cue than the mean colour of the field
    br = _dark_blue_minus_red(imgs)
    ok = ~np.isnan(br)
    thr_acc = max(((br[ok] > t) == y[ok]).mean() for t in np.unique(br[ok]))
    assert thr_acc > acc, (thr_acc, acc)


def _mixed_cells(n, seed=0):
    """n/2 cocci and n/2 straight or bent rods of random sizes over a 32 um field."""
    from gram_tf.data.synth.stamp import Cells

    rng = np.random.default_rng(seed)
    h = n // 2
    cells = Cells()
    r = rng.uniform(0.3, 0.6, h)
    cells.add(x=rng.uniform(0, 32, h), y=rng.uniform(0, 32, h), a=r, b=r, c=r, wcv=1.0, wsaf=0.5)
    w = rng.uniform(0.3, 0.5, h)
    cells.add(x=rng.uniform(0, 32, h), y=rng.uniform(0, 32, h), ang=rng.uniform(0, np.pi, h),
              a=rng.uniform(0.8, 3.0, h), b=w, c=w, bend=rng.choice([0.0, 0.1], h), wcv=0.2, wsaf=1.0)
    return cells.arrays()


def test_stamping_is_batched_and_batching_changes_nothing(monkeypatch):
    """The renderer's speed rests on stamping cells in a few vectorised rounds (one np.bincount
    scatter per map and round), not one round per cell; the batched maps equal the per-cell sum.
    (Speed itself is measured by benchmarks, never by a unit test: docs/development.md.)"""
    from gram_tf.data.synth.stamp import stamp

    cells, size, ppu, soft = _mixed_cells(600), 256, 8.0, 0.42
    scatters = []
    real_bincount = np.bincount

    def counting_bincount(*args, **kwargs):
        scatters.append(1)
        return real_bincount(*args, **kwargs)

    monkeypatch.setattr(np, "bincount", counting_bincount)
    cv, saf, pad = stamp(cells, ppu, size, soft)
    monkeypatch.undo()
    rounds = len(scatters) // 2  # cv and saf
    assert 0 < rounds <= len(cells["x"]) // 10, rounds
    inner = (slice(pad, pad + size),) * 2
    one_by_one = np.zeros((2, size, size))
    for i in range(len(cells["x"])):
        c1, s1, p1 = stamp({k: v[i:i + 1] for k, v in cells.items()}, ppu, size, soft)
        one_by_one += np.stack([c1, s1])[:, p1:p1 + size, p1:p1 + size]
    assert cv.max() > 1  # cells were drawn and overlap
    np.testing.assert_allclose(np.stack([cv[inner], saf[inner]]), one_by_one, atol=1e-5)


@pytest.mark.parametrize("sigma", [4.0, 16.0, 64.0])
def test_large_blurs_run_a_small_kernel(monkeypatch, sigma):
    """Defocus and unsharp-mask blurs take a pooled copy for large sigmas, so the Gaussian pass
    that does the work never grows past sigma 2.5 (at most 17 taps), whatever the sigma."""
    from gram_tf.data.synth import raster

    yy, xx = np.mgrid[0:120, 0:100]
    img = np.repeat(((xx - 40) ** 2 + (yy - 60) ** 2 < 30 ** 2).astype(np.float32)[None], 3, axis=0)
    direct = raster._blur_direct(img, sigma)
    seen = []
    real = raster._blur_direct
    monkeypatch.setattr(raster, "_blur_direct", lambda a, s: seen.append(s) or real(a, s))
    out = raster.blur(img, sigma)
    assert seen and max(seen) <= 2.5, seen
    assert out.shape == img.shape and out.dtype == np.float32
    if sigma <= 6:  # moderate sigmas: the pooled blur is the Gaussian blur, to 0.05
        assert np.abs(out - direct).max() < 0.05


# -- shifted styles (external test sets) ----------------------------------------------------------
def test_every_style_differs_from_the_default_and_is_deterministic_per_seed(small_set, tmp_path):
    """Same seed: the same specimens, other pixels in each shifted style, the same bytes twice; another seed:
    other images in the style too."""
    default = _bytes(small_set[0])
    assert synth.STYLE_NAMES[0] == "default" and len(synth.STYLES) >= 3
    for style in synth.STYLE_NAMES[1:]:
        synthesize_dataset(tmp_path / style, per_class=10, size=64, seed=7, style=style, progress=False)
        a = _bytes(tmp_path / style)
        assert a.keys() == default.keys() and all(a[k] != default[k] for k in a), style
        synthesize_dataset(tmp_path / f"{style}2", per_class=10, size=64, seed=7, style=style, progress=False)
        assert _bytes(tmp_path / f"{style}2") == a, style
        synthesize_dataset(tmp_path / f"{style}8", per_class=2, size=64, seed=8, style=style, progress=False)
        other = _bytes(tmp_path / f"{style}8")
        assert all(other[k] != a[k] for k in other), style


def _mean_colour(seed, style, n=8, size=64):
    imgs = []
    for sp in range(n):
        st = synth.specimen_style(seed, 1, sp, "positive", style)
        imgs.append(np.asarray(render_micrograph(synth.field_rng(seed, 1, sp, 0), "positive", size, st), np.float64))
    return np.stack(imgs)


def test_styles_shift_what_they_say():
    """faded: paler stain (brighter fields); defocus: less fine detail; magnified: the field of view halved."""
    base = _mean_colour(3, "default")
    assert _mean_colour(3, "faded").mean() > base.mean() + 5
    detail = lambda x: np.abs(np.diff(x, axis=2)).mean()  # noqa: E731
    assert detail(_mean_colour(3, "defocus")) < 0.7 * detail(base)
    for sp in range(4):
        st, big = synth.specimen_style(3, 1, sp, "positive"), synth.specimen_style(3, 1, sp, "positive", "magnified")
        assert big.fov_um == pytest.approx(st.fov_um / 2) and big.cv_strength == st.cv_strength
    with pytest.raises(GramTFError, match="unknown synthetic style 'x'; choose one of default, faded"):
        synth.get_style("x")


def test_data_synth_offers_exactly_the_styles(tmp_path):
    from click.testing import CliRunner

    from gram_tf.cli import main

    style = next(p for p in main.commands["data"].commands["synth"].params if p.name == "style")
    assert tuple(style.type.choices) == synth.STYLE_NAMES
    res = CliRunner().invoke(main, ["data", "synth", str(tmp_path / "h"), "--per-class", "2", "--size", "32",
                                    "--style", "hue"])
    assert res.exit_code == 0, res.output
    default = synthesize_dataset(tmp_path / "d", per_class=2, size=32, progress=False)
    assert _bytes(tmp_path / "h") != _bytes(tmp_path / "d") and default["n_written"] == 4
