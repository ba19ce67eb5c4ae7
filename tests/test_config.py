import pytest

from gram_tf.config import load_config, parse_overrides
from gram_tf.errors import GramTFError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_load():
    from gram_tf.models import get_backbone

    for name in ("quickstart", "thesis", "deit_tiny", "transformers"):
        cfg = load_config(f"configs/{name}.yaml")
        assert cfg.name == name and cfg.backbones
        for backbone in cfg.backbones:
            get_backbone(backbone)  # every name is registered
    grid = load_config("configs/transformers.yaml")
    assert {get_backbone(b).family for b in grid.backbones} == {
        "BEiT", "ConvNeXt", "DeiT", "MobileViT", "PoolFormer", "ResNet", "Swin", "ViT"}
    for backbone in grid.backbones:  # every backbone without a Keras ImageNet file gets a checkpoint
        assert get_backbone(backbone).imagenet_files or backbone in grid.backbone_weights


def test_unknown_key_names_key_file_and_suggests(tmp_path):
    p = write(tmp_path, "train:\n  epochz: 3\n")
    with pytest.raises(GramTFError) as e:
        load_config(p)
    msg = str(e.value)
    assert "train.epochz" in msg and str(p) in msg and "did you mean 'train.epochs'" in msg


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, "train:\n  epochs: many\n")
    with pytest.raises(GramTFError, match=r"'train.epochs' must be int"):
        load_config(p)


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(GramTFError, match="train.epochs"):
        load_config(write(tmp_path, "train:\n  epochs: true\n"))


def test_choice_and_range_validation(tmp_path):
    with pytest.raises(GramTFError, match="train.cache"):
        load_config(write(tmp_path, "train:\n  cache: gpu\n"))
    with pytest.raises(GramTFError, match="train.unfreeze"):
        load_config(write(tmp_path, "train:\n  unfreeze: 1.5\n"))
    with pytest.raises(GramTFError, match="prune.levels"):
        load_config(write(tmp_path, "prune:\n  levels: [0.5, 1.2]\n"))


def test_missing_required_value(tmp_path):
    with pytest.raises(GramTFError, match="'backbones' needs at least one"):
        load_config(write(tmp_path, "backbones: []\n"))


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(GramTFError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(GramTFError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_set_overrides_are_parsed_and_validated(tmp_path):
    cfg = load_config("configs/quickstart.yaml",
                      ["train.epochs=3", "backbones=[mobilenet_v1_025, resnet50]", "prune.levels=0.7"])
    assert cfg.train.epochs == 3
    assert cfg.backbones == ["mobilenet_v1_025", "resnet50"]
    assert cfg.prune.levels == [0.7]
    with pytest.raises(GramTFError, match="train.epocs"):
        load_config("configs/quickstart.yaml", ["train.epocs=3"])
    with pytest.raises(GramTFError, match="key=value"):
        parse_overrides(["train.epochs"])


def test_int_accepted_for_float():
    cfg = load_config(None, ["train.learning_rate=1"])
    assert isinstance(cfg.train.learning_rate, float)


def test_per_backbone_weights_mapping(tmp_path):
    cfg = load_config("configs/thesis.yaml")
    assert cfg.backbone_weights["deit_tiny"].endswith(".safetensors") and "deit_tiny" in cfg.backbones
    with pytest.raises(GramTFError, match="backbone_weights names resnet18"):
        load_config(None, ["backbone_weights={resnet18: x.h5}"])
    with pytest.raises(GramTFError, match="'backbone_weights' must be a mapping"):
        load_config(None, ["backbone_weights=[a]"])


def test_external_sets_a_folder_or_a_synthetic_style(tmp_path):
    cfg = load_config("configs/quickstart.yaml")
    (name, ext), = cfg.data.external.items()  # the README's main command shows the shift section
    assert ext.synth_style == "faded" and ext.dir is None
    cfg = load_config(None, ["data.external={lab_b: /data/lab_b, lab_c: {dir: /data/c}, blur: {synth_style: defocus}}"])
    assert {n: (e.dir, e.synth_style) for n, e in cfg.data.external.items()} == {
        "lab_b": ("/data/lab_b", None), "lab_c": ("/data/c", None), "blur": (None, "defocus")}
    from gram_tf.config import dump_yaml

    dump_yaml(cfg, tmp_path / "c.yaml")  # a study's config.yaml reads back as the same config
    assert load_config(tmp_path / "c.yaml").data.external == cfg.data.external
    for value, needle in [("{x: {}}", "needs exactly one of 'dir'"),
                          ("{x: {dir: d, synth_style: faded}}", "needs exactly one of 'dir'"),
                          ("{x: {dir: d, synth_per_class: 3}}", "synth_per_class' is for a synthetic set"),
                          ("{x: {synth_style: faded, synth_per_class: 0}}", "data.external.x.synth_per_class' = 0"),
                          ("{x: {synth_stile: faded}}", "did you mean 'data.external.x.synth_style'"),
                          ("{'a/b': d}", "one folder name"), ("[d]", "must be a mapping"), ("{x: 3}", "must be a mapping")]:
        with pytest.raises(GramTFError, match=needle):
            load_config(None, [f"data.external={value}"])


# ---- issue 36: one config reader (hostile YAML, declared ranges, names and paths) ---------------------
import math  # noqa: E402
import time  # noqa: E402
import typing  # noqa: E402

from gram_tf.config import MAX_COMPONENT_CHARS, Range, _fields, field_range, get_value  # noqa: E402


def _alias_bomb(key: str, levels: int = 7) -> str:
    """The issue's ~1 kB YAML whose 7 alias levels expand 10x each (10^7 strings) under `key`."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines).replace("a0: ", "backbones: ", 1) + f"\n{key}: [" + ",".join([f"*a{levels - 1}"] * 10) + "]\n"


def _one_short_line(msg: str, *needles):
    assert "\n" not in msg and len(msg) <= 400, msg[:500]
    for n in needles:
        assert n in msg, msg


HOSTILE_YAML = {
    "alias bomb in backbones": (_alias_bomb("x").replace("\nx:", "\nbackbones2:"), "YAML aliases (&/*) are not allowed"),
    "alias bomb under backbone_weights": (_alias_bomb("backbone_weights"), "YAML aliases (&/*) are not allowed"),
    "one anchor": ("seed: &s 1\n", "YAML aliases (&/*) are not allowed"),
    "merge key": ("<<: {seed: 1}\n", "merge keys"),
    "20 000 nested [": ("train: " + "[" * 20000 + "\n", "nested deeper than 32"),
    "20 000 nested {": ("x: " + "{a: " * 20000 + "\n", "nested deeper than 32"),
    "a second train: block": ("train:\n  epochs: 3\nseed: 1\ntrain:\n  batch_size: 8\n", "duplicate key 'train'", "line 4"),
    "duplicate key in a flow mapping": ("train: {epochs: 3, epochs: 4}\n", "duplicate key 'epochs'"),
    "impossible date": ("seed: 2001-02-30\n", "line 1", "cannot be read"),  # PyYAML raised ValueError
    "bad explicit int": ("seed: !!int 0b\n", "cannot be read"),
    "empty explicit int": ("seed: !!int \n", "cannot be read"),  # IndexError inside PyYAML (found by the fuzz test)
}


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_one_short_line_fast(tmp_path, case):
    text, *needles = HOSTILE_YAML[case]
    p = write(tmp_path, text)
    t0 = time.perf_counter()
    with pytest.raises(GramTFError) as e:
        load_config(p)
    assert time.perf_counter() - t0 < 1.0
    _one_short_line(str(e.value), str(p), *needles)


@pytest.mark.parametrize("override, needle", [
    ("backbones=[&a x, *a]", "YAML aliases"),
    ("train.epochs=" + "[" * 20000, "nested deeper than 32"),
    ("train={epochs: 1, epochs: 2}", "duplicate key 'epochs'"),
    ("name=" + "x" * 10 ** 6, "key 'name'"),  # a megabyte value is echoed cut, not whole
    ("train.epochs=" + "y" * 10 ** 6, "'train.epochs' must be int"),
    ("k" * 10 ** 6 + "=1", "unknown key"),
    ("backbone_weights={a: [1, 2]}", "backbone_weights.a"),
], ids=lambda v: v if len(v) < 40 else f"{v[:20]}...({len(v)} chars)")
def test_hostile_set_values_are_one_short_line(override, needle):
    with pytest.raises(GramTFError) as e:
        load_config(None, [override])
    _one_short_line(str(e.value), needle)


def _numeric(tp) -> bool:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    item = typing.get_args(args[0])[0] if typing.get_origin(args[0]) is list and typing.get_args(args[0]) else args[0]
    return item in (int, float)


def test_every_numeric_key_declares_a_range_that_holds_its_default():
    numeric = [(key, f) for key, f, tp in _fields() if _numeric(tp)]
    assert len(numeric) >= 45  # every section's counts, rates and fractions
    defaults = load_config(None)
    for key, f in numeric:
        assert isinstance(f.metadata.get("range"), Range), f"{key} declares no range"
        f.metadata["range"].check(get_value(defaults, key), key)


def _outside(rng: Range, integer: bool):
    """Values just outside `rng`, and the non-finite ones."""
    out = [] if integer else [math.nan, math.inf, -math.inf]
    if rng.lo != -math.inf:
        out.append(rng.lo if rng.lo_open else (rng.lo - 1 if integer else rng.lo - 1e-6))
    if rng.hi != math.inf:
        out.append(rng.hi if rng.hi_open else (rng.hi + 1 if integer else rng.hi + 1e-6))
    return out


@pytest.mark.parametrize("key", [key for key, f, tp in _fields() if _numeric(tp)])
def test_every_numeric_key_refuses_values_outside_its_range(key):
    f_tp = next(tp for k, _, tp in _fields() if k == key)
    integer = "int" in str(f_tp) and "float" not in str(f_tp)
    is_list = "list" in str(f_tp)
    for bad in _outside(field_range(key), integer):
        with pytest.raises(GramTFError) as e:
            load_config(None, {**_nest(key, [bad] if is_list else bad)})
        _one_short_line(str(e.value), f"'{key}'")


def _nest(dotted: str, value) -> dict:
    head, _, rest = dotted.partition(".")
    return {head: _nest(rest, value) if rest else value}


@pytest.mark.parametrize("override", [
    "bench.threads=[100000]", "bench.threads=[0]", "bench.threads=[true]", "bench.threads=[1.5]",
    "bench.max_seconds=-1", "bench.max_seconds=.nan", "bench.max_seconds=.inf", "bench.runs=0",
    "train.label_smoothing=5", "convert.max_disagreement=.nan", "report.max_drop=.nan", "report.max_drop=2",
    "report.max_drop_pp=.nan", "report.max_drop_pp=101", "convert.fast_max_drop_pp=-1",
    "convert.calibration_percentile=50", "prune.levels=[.nan]", "seed=-1", "train.learning_rate=.inf",
])
def test_issue_range_cases(override):
    with pytest.raises(GramTFError) as e:
        load_config(None, [override])
    _one_short_line(str(e.value), override.split("=")[0])


def test_calibration_percentile_range_is_calibrations_own():
    from gram_tf.convert.calibration import Calibration

    for p in (49.0, 50.0, 50.001, 99.99, 100.0, 100.001, math.nan):
        try:
            Calibration("percentile", percentile=p)
            calibration_ok = True
        except GramTFError:
            calibration_ok = False
        assert (p in field_range("convert.calibration_percentile")) == calibration_ok, p


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\\b", "a\nb", "a\x00b", "x" * 101, "", "a b"])
def test_name_is_one_folder_name(name):
    with pytest.raises(GramTFError) as e:
        load_config(None, {"name": name})
    _one_short_line(str(e.value), "key 'name'", "one folder name")
    assert load_config(None, {"name": "my_study-2"}).name == "my_study-2"


@pytest.mark.parametrize("key", ["out", "tflite_dir", "weights_dir", "data.dir", "data.manifest", "train.weights",
                                 "backbone_weights"])
def test_over_long_path_components_are_one_line(key):
    long = "/tmp/" + "a" * (MAX_COMPONENT_CHARS + 1) + "/x"
    value = {"mobilenet_v2_035": long} if key == "backbone_weights" else long
    with pytest.raises(GramTFError) as e:
        load_config(None, _nest(key, value))
    _one_short_line(str(e.value), f"'{key}'", "path component of 256 characters")
    with pytest.raises(GramTFError, match="NUL"):
        load_config(None, _nest(key, {"mobilenet_v2_035": "a\0b"} if key == "backbone_weights" else "a\0b"))


def test_over_long_config_path_and_special_files_are_one_line(tmp_path):
    with pytest.raises(GramTFError) as e:
        load_config(tmp_path / ("c" * 300 + ".yaml"))
    _one_short_line(str(e.value), "path component of 305 characters")
    with pytest.raises(GramTFError, match="not a regular file"):
        load_config("/dev/zero")
    big = write(tmp_path, "seed: 1\n" + "#" * (2 << 20))
    with pytest.raises(GramTFError, match="larger than 1 MiB"):
        load_config(big)
