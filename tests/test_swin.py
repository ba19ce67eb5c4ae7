"""Swin-T: checkpoint import against an independent numpy forward pass, name mapping against timm's
real tensor list, conversion (no GATHER, XNNPACK delegation), save/load and pruning."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from gram_tf.errors import GramTFError
from gram_tf.models import build_classifier, feature_extractor, list_backbones
from gram_tf.models.swin import SPECS, _spec, expected_tensors

NAME = "swin_tiny"
INT8_TRANSFORMER_FALLBACKS = {"SQUARED_DIFFERENCE", "ADD", "RSQRT", "SUB", "BATCH_MATMUL", "SOFTMAX", "GELU"}
TIMM_JSON = Path(__file__).resolve().parents[2] / "shared" / "timm_checkpoints" / "swin_tiny_patch4_window7_224.json"


def _random_checkpoint(seed=0):
    rng = np.random.default_rng(seed)
    t = {}
    for name, shape in expected_tensors(_spec(NAME)).items():
        noise = rng.standard_normal(shape).astype(np.float32)
        if name.endswith("relative_position_bias_table"):
            t[name] = noise * 0.5  # large enough to matter
        elif "norm" in name and name.endswith(".weight"):
            t[name] = 1 + noise * 0.05
        else:
            t[name] = noise * 0.05
    t["head.fc.weight"] = np.zeros((1000, 768), np.float32)  # ImageNet head: ignored
    t["head.fc.bias"] = np.zeros(1000, np.float32)
    return t


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from safetensors.numpy import save_file

    t = _random_checkpoint()
    path = tmp_path_factory.mktemp("swin") / "swin_tiny.safetensors"
    save_file(t, str(path))
    return t, path


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return build_classifier(NAME, 2, 224, weights=str(checkpoint[1]))


# ----------------------------------------------------------------- independent numpy reference
def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _linear(t, prefix, x):
    y = x @ t[f"{prefix}.weight"].T
    return y + t[f"{prefix}.bias"] if f"{prefix}.bias" in t else y


def _windows(x, w):  # (H, W, C) -> (nW, w*w, C), windows row-major
    h, wd, c = x.shape
    return x.reshape(h // w, w, wd // w, w, c).transpose(0, 2, 1, 3, 4).reshape(-1, w * w, c)


def _unwindows(x, w, h, wd):
    c = x.shape[-1]
    return x.reshape(h // w, wd // w, w, w, c).transpose(0, 2, 1, 3, 4).reshape(h, wd, c)


def _rel_index(w):
    idx = np.zeros((w * w, w * w), np.int64)
    for i in range(w * w):
        for j in range(w * w):
            dy, dx = i // w - j // w, i % w - j % w
            idx[i, j] = (dy + w - 1) * (2 * w - 1) + (dx + w - 1)
    return idx


def _mask(h, w, s):
    img = np.zeros((h, h))
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            img[hs, ws] = cnt
            cnt += 1
    mw = _windows(img[:, :, None], w)[..., 0]  # (nW, N)
    return np.where(mw[:, None, :] - mw[:, :, None] != 0, -100.0, 0.0)


def _block(t, p, x, heads, window, shift):
    h, wd, c = x.shape
    hd = c // heads
    y = _ln(x, t[f"{p}.norm1.weight"], t[f"{p}.norm1.bias"])
    if shift:
        y = np.roll(y, (-shift, -shift), axis=(0, 1))
    win = _windows(y, window)  # (nW, N, C)
    qkv = _linear(t, f"{p}.attn.qkv", win).reshape(win.shape[0], window * window, 3, heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (nW, N, heads, hd)
    a = np.einsum("wihd,wjhd->whij", q * hd ** -0.5, k)
    table = t[f"{p}.attn.relative_position_bias_table"]
    a = a + table[_rel_index(window)].transpose(2, 0, 1)[None]
    if shift:
        a = a + _mask(h, window, shift)[:, None]
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum("whij,wjhd->wihd", a, v).reshape(win.shape[0], window * window, c)
    o = _unwindows(_linear(t, f"{p}.attn.proj", o), window, h, wd)
    if shift:
        o = np.roll(o, (shift, shift), axis=(0, 1))
    x = x + o
    y = _ln(x, t[f"{p}.norm2.weight"], t[f"{p}.norm2.bias"])
    y = _linear(t, f"{p}.mlp.fc1", y)
    y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
    return x + _linear(t, f"{p}.mlp.fc2", y)


def _numpy_forward(t, image):
    """timm's forward_head(forward_features(x), pre_logits=True) for one HWC image, in float64."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    embed, depths, heads = SPECS[NAME]
    g = image.shape[0] // 4
    patches = image.reshape(g, 4, g, 4, 3).transpose(0, 2, 4, 1, 3).reshape(g, g, 48)  # (c, kh, kw)
    x = patches @ t["patch_embed.proj.weight"].reshape(embed, -1).T + t["patch_embed.proj.bias"]
    x = _ln(x, t["patch_embed.norm.weight"], t["patch_embed.norm.bias"])
    for s, (depth, nh) in enumerate(zip(depths, heads)):
        if s > 0:
            d = f"layers.{s}.downsample"
            x = np.concatenate([x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]], -1)
            x = _ln(x, t[f"{d}.norm.weight"], t[f"{d}.norm.bias"]) @ t[f"{d}.reduction.weight"].T
        grid = x.shape[0]
        for b in range(depth):
            window, shift = (7, 3 if b % 2 else 0) if grid > 7 else (grid, 0)
            x = _block(t, f"layers.{s}.blocks.{b}", x, nh, window, shift)
    x = _ln(x, t["norm.weight"], t["norm.bias"])
    return x.mean((0, 1))


# ----------------------------------------------------------------------------------- tests
def test_swin_is_registered():
    bb = {b.name: b for b in list_backbones()}[NAME]
    assert bb.family == "Swin" and bb.default_size == 224 and bb.patch_size == 224
    assert bb.preprocessing == {"channel_order": "RGB", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def test_checkpoint_import_matches_numpy_forward(checkpoint, loaded):
    t, _ = checkpoint
    model, _ = loaded
    image = np.random.default_rng(1).standard_normal((2, 224, 224, 3)).astype(np.float32)
    ours = feature_extractor(model)(image).numpy()
    assert ours.shape == (2, 768)
    for i in range(2):
        np.testing.assert_allclose(ours[i], _numpy_forward(t, image[i]), rtol=1e-4, atol=1e-4)
    # the parameters are timm's backbone, tensor for tensor (the table is a weight, not a buffer)
    assert model.count_params() - (768 * 2 + 2) == sum(int(np.prod(v.shape)) for k, v in t.items() if "head" not in k)


def test_names_and_shapes_match_timm():
    if not TIMM_JSON.exists():
        pytest.skip(f"{TIMM_JSON} absent (the shared timm tensor lists)")
    meta = json.loads(TIMM_JSON.read_text())
    timm = {k: tuple(v) for k, v in meta["tensors"].items() if not k.startswith("head.")}
    ours = expected_tensors(_spec(NAME))
    assert ours == timm
    assert list(ours) == list(timm)  # and in timm's order
    assert meta["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406] and meta["pretrained_cfg"]["std"] == [0.229, 0.224, 0.225]


def test_bad_checkpoints_list_the_names(checkpoint, tmp_path):
    from safetensors.numpy import save_file

    t, _ = checkpoint
    broken = dict(t)
    del broken["layers.2.blocks.3.mlp.fc1.bias"]
    broken["layers.0.blocks.0.attn.rel_pos"] = np.zeros(3, np.float32)
    broken["layers.0.blocks.1.attn_mask"] = np.zeros(3, np.float32)  # a buffer old timm saved: ignored
    save_file(broken, str(tmp_path / "b.safetensors"))
    with pytest.raises(GramTFError) as e:
        build_classifier(NAME, 2, 224, weights=str(tmp_path / "b.safetensors"))
    msg = str(e.value)
    assert "missing layers.2.blocks.3.mlp.fc1.bias" in msg and "unexpected layers.0.blocks.0.attn.rel_pos" in msg
    assert "attn_mask" not in msg
    shaped = dict(t)
    shaped["layers.1.blocks.0.attn.relative_position_bias_table"] = np.zeros((169, 3), np.float32)
    shaped["layers.3.downsample.reduction.weight"] = np.zeros((10, 10), np.float32)
    save_file(shaped, str(tmp_path / "s.safetensors"))
    with pytest.raises(GramTFError, match="mis-shaped.*stage1_block0_attn.*stage3_reduction"):
        build_classifier(NAME, 2, 224, weights=str(tmp_path / "s.safetensors"))
    for size in (192, 256, 320):
        with pytest.raises(GramTFError, match="swin_tiny"):
            build_classifier(NAME, 2, size, weights="none")


def test_windows_masks_and_large_input():
    """448 px: the last stage shifts too (grid 14 > window 7); the layers against the reference."""
    from gram_tf.models.swin_layers import relative_position_index, shifted_window_mask

    np.testing.assert_array_equal(relative_position_index(7), _rel_index(7))
    for grid in (14, 28, 56):
        np.testing.assert_array_equal(shifted_window_mask(grid, 7, 3), _mask(grid, 7, 3))
    model, _ = build_classifier(NAME, 2, 448, weights="none")
    attn = model.get_layer("stage3_block1_attn")
    assert (attn.grid, attn.window, attn.shift) == (14, 7, 3)


def test_convert_fp32_and_int8_no_gather_fully_delegated(loaded):
    from ai_edge_litert.interpreter import Interpreter

    from gram_tf.convert import convert_model
    from gram_tf.deploy.profile import delegation

    model, info = loaded
    rep = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), np.uint8)
    for variant in ("fp32", "int8"):
        blob = convert_model(model, variant, 224, info["preprocessing"], rep)
        d = delegation(blob)
        print(variant, {k: d[k] for k in ("nodes", "delegated_nodes", "partitions", "fallback_ops")})
        assert "GATHER" not in d["op_counts"] and "ROLL" not in d["op_counts"]
        if variant == "fp32":
            assert d["partitions"] == 1 and not d["fallback_ops"], d["fallback_ops"]
        else:  # int8: only what every int8 transformer leaves to the builtin kernels (LayerNorm's
            # ops, attention matmuls, softmax, GELU); none of the window / shift / merge glue
            assert set(d["fallback_ops"]) <= INT8_TRANSFORMER_FALLBACKS, d["fallback_ops"]
    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    assert np.dtype(inp["dtype"]) == np.int8
    it.set_tensor(inp["index"], np.zeros(inp["shape"], np.int8))
    it.invoke()
    assert it.get_tensor(it.get_output_details()[0]["index"]).shape == (1, 2)


def test_save_load_round_trip(loaded, tmp_path):
    from gram_tf.models import load_model, save_model

    model, _ = loaded
    x = np.random.default_rng(2).standard_normal((1, 224, 224, 3)).astype(np.float32)
    save_model(model, tmp_path / "swin.keras")
    again = load_model(tmp_path / "swin.keras")
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(again.get_layer("stage2_block3_attn").get_weights()[0],
                               model.get_layer("stage2_block3_attn").get_weights()[0])


def test_prunable_layers_are_the_projections(loaded):
    from gram_tf.optimize import prunable_layer_report

    model, _ = loaded
    report = prunable_layer_report(model)
    prunable = set(report["prunable"])
    kinds = {type(model.get_layer(n)).__name__ for n in prunable}
    assert kinds <= {"Dense", "Conv2D"}
    per_block = {f"stage2_block5_{k}" for k in ("qkv", "proj", "fc1", "fc2")}
    assert per_block | {"patch_embed", "stage1_reduction", "stage3_reduction"} <= prunable
    assert not any(n.endswith(("_attn", "_partition", "_reverse", "_merge", "_gelu")) for n in prunable)
    # 1 patch embedding + 3 reductions + 4 per block, and the head
    assert len(prunable) == 1 + 3 + 4 * 12 + 1
    from gram_tf.config import PruneConfig
    from gram_tf.optimize import apply_pruning

    wrapped, _, _ = apply_pruning(model, PruneConfig(), 0.5, 100)
    pruned = {layer.layer.name for layer in wrapped.layers if type(layer).__name__ == "PruneLowMagnitude"}
    assert pruned == prunable


def test_hugging_face_names_load_the_same_weights(checkpoint, loaded, tmp_path):
    """A SwinForImageClassification state dict (`swin.` prefix, separate query/key/value, patch
    merging at the end of the previous stage) loads the same weights as timm's file."""
    from safetensors.numpy import save_file

    t, _ = checkpoint
    block = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    hf = {"classifier.weight": np.zeros((1000, 768), np.float32)}
    for key, value in t.items():
        if key.startswith("head."):
            continue
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if key.endswith("relative_position_bias_table"):
            s, b = key.split(".")[1], key.split(".")[3]
            hf[f"swin.encoder.layers.{s}.blocks.{b}.attention.self.relative_position_bias_table"] = value
            hf[f"swin.encoder.layers.{s}.blocks.{b}.attention.self.relative_position_index"] = np.zeros((49, 49), np.int64)
        elif m and m.group(3) == "attn.qkv":
            for part, arr in zip(("query", "key", "value"), np.split(value, 3, axis=0)):
                hf[f"swin.encoder.layers.{m.group(1)}.blocks.{m.group(2)}.attention.self.{part}.{m.group(4)}"] = arr
        elif m:
            hf[f"swin.encoder.layers.{m.group(1)}.blocks.{m.group(2)}.{block[m.group(3)]}.{m.group(4)}"] = value
        elif key.startswith("layers."):  # layers.S.downsample.* -> encoder.layers.(S-1).downsample.*
            stage, rest = key.split(".", 2)[1:]
            hf[f"swin.encoder.layers.{int(stage) - 1}.{rest}"] = value
        else:
            hf["swin." + {"patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
                          "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
                          "patch_embed.norm.weight": "embeddings.norm.weight", "patch_embed.norm.bias": "embeddings.norm.bias",
                          "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}[key]] = value
    save_file(hf, str(tmp_path / "hf.safetensors"))
    model, _ = build_classifier(NAME, 2, 224, weights=str(tmp_path / "hf.safetensors"))
    ours = {w.name: w.numpy() for layer in loaded[0].layers if not layer.name.startswith("head_") for w in layer.weights}
    for layer in model.layers:
        if layer.name.startswith("head_"):
            continue
        for w in layer.weights:
            np.testing.assert_array_equal(w.numpy(), ours[w.name], err_msg=w.name)
