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
