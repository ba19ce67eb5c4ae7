"""PoolFormer: timm checkpoint import against an independent numpy forward pass (NCHW, as timm
computes it), the name mapping against timm's own listing, conversion."""
import json
from pathlib import Path

import numpy as np
import pytest

from gram_tf.errors import GramTFError
from gram_tf.models import build_classifier, feature_extractor
from gram_tf.models.poolformer import DIMS, SPECS, expected_shapes

from .torch_reference import avg_pool_exclude_pad, conv2d, gelu, group_norm1, layer_norm

TIMM = Path(__file__).resolve().parents[2] / "shared" / "timm_checkpoints"


def _random_checkpoint(depths, seed=0):
    rng = np.random.default_rng(seed)
    t = {}
    for name, shape in expected_shapes(depths).items():
        if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            t[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif "layer_scale" in name:  # far from timm's 1e-5 init, so every block matters
            t[name] = rng.uniform(0.2, 1.0, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 10
            t[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    t["head.fc.weight"] = rng.standard_normal((1000, DIMS[-1])).astype(np.float32)  # ignored
    t["head.fc.bias"] = np.zeros(1000, np.float32)
    return t


def _numpy_forward(t, image, depths):
    """timm's MetaFormer (poolformer v1) forward on one CHW image; returns pre-logits features."""
    pooled = _trunk(t, image, depths).mean(axis=(1, 2))
    return layer_norm(pooled, t["head.norm.weight"], t["head.norm.bias"], 1e-6)


def _trunk(t, image, depths):
    """Stem and the four stages (the map before the head), CHW."""
    x = conv2d(image, t["stem.conv.weight"], t["stem.conv.bias"], stride=4, padding=2)
    for s, depth in enumerate(depths):
        if s > 0:
            p = f"stages.{s}.downsample.conv"
            x = conv2d(x, t[f"{p}.weight"], t[f"{p}.bias"], stride=2, padding=1)
        for b in range(depth):
            p = f"stages.{s}.blocks.{b}"
            y = group_norm1(x, t[f"{p}.norm1.weight"], t[f"{p}.norm1.bias"])
            x = x + t[f"{p}.layer_scale1.scale"][:, None, None] * (avg_pool_exclude_pad(y) - y)
            y = group_norm1(x, t[f"{p}.norm2.weight"], t[f"{p}.norm2.bias"])
            y = gelu(conv2d(y, t[f"{p}.mlp.fc1.weight"], t[f"{p}.mlp.fc1.bias"]))
            y = conv2d(y, t[f"{p}.mlp.fc2.weight"], t[f"{p}.mlp.fc2.bias"])
            x = x + t[f"{p}.layer_scale2.scale"][:, None, None] * y
    return x


@pytest.mark.parametrize("size", [64, 72])
def test_checkpoint_import_matches_numpy_forward(size, tmp_path):
    from safetensors.numpy import save_file

    depths = SPECS["poolformer_s12"][0]
    t = _random_checkpoint(depths)
    save_file(t, str(tmp_path / "ckpt.safetensors"))
    model, info = build_classifier("poolformer_s12", 2, size, weights=str(tmp_path / "ckpt.safetensors"))
    assert info["preprocessing"]["mean"] == pytest.approx([123.675, 116.28, 103.53])
    image = np.random.default_rng(1).standard_normal((size, size, 3)).astype(np.float32)
    ours = feature_extractor(model)(image[None]).numpy()[0]
    ref = _numpy_forward(t, image.transpose(2, 0, 1).astype(np.float64), depths)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("timm_name,ours", [("poolformer_s12", "poolformer_s12"), ("poolformer_s24", "poolformer_s24")])
def test_names_and_shapes_match_timm(timm_name, ours):
    path = TIMM / f"{timm_name}.json"
    if not path.is_file():
        pytest.skip(f"{path} absent (../shared/timm_checkpoints is a developer-side listing)")
    listing = json.loads(path.read_text())["tensors"]
    timm = {k: tuple(v) for k, v in listing.items() if not k.startswith("head.fc.")}
    assert expected_shapes(SPECS[ours][0]) == timm


def test_bad_checkpoints_list_the_names(tmp_path):
    from safetensors.numpy import save_file

    t = _random_checkpoint(SPECS["poolformer_s12"][0])
    broken = dict(t)
    del broken["stages.2.blocks.5.mlp.fc2.bias"]
    broken["stages.2.blocks.5.token_mixer.weight"] = np.zeros(3, np.float32)
    save_file(broken, str(tmp_path / "b.safetensors"))
    with pytest.raises(GramTFError) as e:
        build_classifier("poolformer_s12", 2, 32, weights=str(tmp_path / "b.safetensors"))
    assert "missing stages.2.blocks.5.mlp.fc2.bias" in str(e.value)
    assert "unexpected stages.2.blocks.5.token_mixer.weight" in str(e.value)
    shaped = dict(t)
    shaped["stages.1.downsample.conv.weight"] = np.zeros((128, 64, 5, 5), np.float32)
    save_file(shaped, str(tmp_path / "s.safetensors"))
    with pytest.raises(GramTFError, match="mis-shaped.*stage1_down"):
        build_classifier("poolformer_s12", 2, 32, weights=str(tmp_path / "s.safetensors"))


def test_hugging_face_file_builds_norm_then_pool_and_matches_numpy(tmp_path):
    """A `sail/poolformer_*` file from Hugging Face (the original implementation's head: GroupNorm on
    the map, then the mean) builds that head and matches a numpy forward of it."""
    import re

    from safetensors.numpy import save_file

    depths = SPECS["poolformer_s12"][0]
    t = _random_checkpoint(depths, seed=3)
    block = {"norm1": "before_norm", "norm2": "after_norm", "mlp.fc1": "output.conv1", "mlp.fc2": "output.conv2"}
    hf = {"classifier.weight": t["head.fc.weight"], "classifier.bias": t["head.fc.bias"],
          "norm.weight": t["head.norm.weight"], "norm.bias": t["head.norm.bias"]}
    for key, value in t.items():
        if key.startswith("head."):
            continue
        if key.startswith("stem.conv."):
            hf[f"poolformer.encoder.patch_embeddings.0.projection.{key.rsplit('.', 1)[1]}"] = value
            continue
        m = re.match(r"stages\.(\d+)\.downsample\.conv\.(weight|bias)$", key)
        if m:
            hf[f"poolformer.encoder.patch_embeddings.{m.group(1)}.projection.{m.group(2)}"] = value
            continue
        s, b, rest = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)$", key).groups()
        if rest.startswith("layer_scale"):
            rest = f"layer_scale_{rest[11]}"
        else:
            stem, kind = rest.rsplit(".", 1)
            rest = f"{block[stem]}.{kind}"
        hf[f"poolformer.encoder.block.{s}.{b}.{rest}"] = value
    save_file(hf, str(tmp_path / "hf.safetensors"))
    size = 64
    model, _ = build_classifier("poolformer_s12", 2, size, weights=str(tmp_path / "hf.safetensors"))
    assert [layer.name for layer in model.layers][-5:-3] == ["features_norm", "features_pool"]
    image = np.random.default_rng(2).standard_normal((size, size, 3)).astype(np.float32)
    ours = feature_extractor(model)(image[None]).numpy()[0]
    timm_ref = _numpy_forward(t, image.transpose(2, 0, 1).astype(np.float64), depths)
    # the same trunk: undo timm's pooled LayerNorm, apply GroupNorm(1) to the map, then the mean
    x = _trunk(t, image.transpose(2, 0, 1).astype(np.float64), depths)
    hf_ref = group_norm1(x, t["head.norm.weight"], t["head.norm.bias"]).mean(axis=(1, 2))
    np.testing.assert_allclose(ours, hf_ref, rtol=1e-4, atol=1e-4)
    assert np.abs(hf_ref - timm_ref).max() > 1e-3  # the two heads are different functions
