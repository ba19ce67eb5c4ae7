"""BEiT: checkpoint import against an independent numpy forward pass, relative-position table
resizing, name checks, pruning report, LiteRT conversion (no GATHER) and save/load."""
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf


from gram_tf.errors import GramTFError
from gram_tf.models import build_classifier, feature_extractor, get_backbone
from gram_tf.models.beit import SPECS, expected_names, expected_shapes, load_checkpoint, resize_bias_table

PATCH = 16
SIZE = 48  # a 3x3 patch grid: BEiT-base's 86M weights, only the bias tables depend on the size
SHARED_JSON = Path(__file__).resolve().parents[2] / "shared" / "timm_checkpoints" / "beit_base_patch16_224.json"
DIM, DEPTH, HEADS, _ = SPECS["beit_base"]
SPEC = get_backbone("beit_base").app_kwargs


def _random_timm_checkpoint(grid, seed=0):
    """timm 1.0 beit_base_patch16_224 names and layouts, a relative-position table for `grid`."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.05):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

    rows = (2 * grid - 1) ** 2 + 3
    t = {"cls_token": r(1, 1, DIM), "patch_embed.proj.weight": r(DIM, 3, PATCH, PATCH), "patch_embed.proj.bias": r(DIM)}
    for i in range(DEPTH):
        b = f"blocks.{i}"
        t[f"{b}.gamma_1"] = rng.uniform(0.1, 1.0, DIM).astype(np.float32)
        t[f"{b}.gamma_2"] = rng.uniform(0.1, 1.0, DIM).astype(np.float32)
        t[f"{b}.norm1.weight"], t[f"{b}.norm1.bias"] = 1 + r(DIM), r(DIM)
        t[f"{b}.attn.q_bias"], t[f"{b}.attn.v_bias"] = r(DIM), r(DIM)
        t[f"{b}.attn.relative_position_bias_table"] = r(rows, HEADS, scale=0.5)
        t[f"{b}.attn.qkv.weight"] = r(3 * DIM, DIM)
        t[f"{b}.attn.proj.weight"], t[f"{b}.attn.proj.bias"] = r(DIM, DIM), r(DIM)
        t[f"{b}.norm2.weight"], t[f"{b}.norm2.bias"] = 1 + r(DIM), r(DIM)
        t[f"{b}.mlp.fc1.weight"], t[f"{b}.mlp.fc1.bias"] = r(4 * DIM, DIM), r(4 * DIM)
        t[f"{b}.mlp.fc2.weight"], t[f"{b}.mlp.fc2.bias"] = r(DIM, 4 * DIM), r(DIM)
    t["fc_norm.weight"], t["fc_norm.bias"] = 1 + r(DIM), r(DIM)
    t["head.weight"], t["head.bias"] = r(1000, DIM), r(1000)  # ImageNet head: ignored
    return t


def _rel_index(grid):
    """Token pair -> table row, spelled out pair by pair (token 0 is the class token)."""
    side = 2 * grid - 1
    n_rel = side * side
    pos = [None] + [(p // grid, p % grid) for p in range(grid * grid)]
    n = len(pos)
    index = np.zeros((n, n), int)
    for i in range(n):
        for j in range(n):
            if i == 0 and j == 0:
                index[i, j] = n_rel + 2  # class -> class
            elif i == 0:
                index[i, j] = n_rel  # class -> token
            elif j == 0:
                index[i, j] = n_rel + 1  # token -> class
            else:
                dy = pos[i][0] - pos[j][0] + grid - 1
                dx = pos[i][1] - pos[j][1] + grid - 1
                index[i, j] = dy * side + dx
    return index


def _numpy_forward(t, image):
    """Independent BEiT forward in numpy on timm's tensors: forward_head(forward_features(x), pre_logits=True)."""
    def ln(x, w, b, eps=1e-6):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w + b

    t = {k: v.astype(np.float64) for k, v in t.items()}
    g = image.shape[0] // PATCH
    patches = image.reshape(g, PATCH, g, PATCH, 3).transpose(0, 2, 4, 1, 3).reshape(g * g, 3 * PATCH * PATCH)
    w = t["patch_embed.proj.weight"]
    x = patches @ w.reshape(w.shape[0], -1).T + t["patch_embed.proj.bias"]
    x = np.concatenate([t["cls_token"][0], x], 0)
    hd = DIM // HEADS
    index = _rel_index(g)
    for i in range(DEPTH):
        b = f"blocks.{i}"
        y = ln(x, t[f"{b}.norm1.weight"], t[f"{b}.norm1.bias"])
        bias = np.concatenate([t[f"{b}.attn.q_bias"], np.zeros(DIM), t[f"{b}.attn.v_bias"]])
        q, k, v = np.split(y @ t[f"{b}.attn.qkv.weight"].T + bias, 3, axis=1)
        table = t[f"{b}.attn.relative_position_bias_table"]
        outs = []
        for h in range(HEADS):
            sl = slice(h * hd, (h + 1) * hd)
            a = q[:, sl] @ k[:, sl].T / np.sqrt(hd) + table[index, h]
            a = np.exp(a - a.max(1, keepdims=True))
            a /= a.sum(1, keepdims=True)
            outs.append(a @ v[:, sl])
        y = np.concatenate(outs, 1) @ t[f"{b}.attn.proj.weight"].T + t[f"{b}.attn.proj.bias"]
        x = x + t[f"{b}.gamma_1"] * y
        y = ln(x, t[f"{b}.norm2.weight"], t[f"{b}.norm2.bias"])
        y = y @ t[f"{b}.mlp.fc1.weight"].T + t[f"{b}.mlp.fc1.bias"]
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
        x = x + t[f"{b}.gamma_2"] * (y @ t[f"{b}.mlp.fc2.weight"].T + t[f"{b}.mlp.fc2.bias"])
    return ln(x[1:].mean(0), t["fc_norm.weight"], t["fc_norm.bias"])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """beit_base at 48 px with a random timm checkpoint for the 3x3 grid: (model, info, tensors, path)."""
    from safetensors.numpy import save_file

    t = _random_timm_checkpoint(SIZE // PATCH)
    path = tmp_path_factory.mktemp("beit") / "beit.safetensors"
    save_file(t, str(path))
    model, info = build_classifier("beit_base", 2, SIZE, weights=str(path))
    return model, info, t, path


def test_registered_with_timm_preprocessing():
    bb = get_backbone("beit_base")
    assert bb.family == "BEiT" and bb.patch_size == PATCH and bb.default_size == 224
    assert bb.preprocessing == {"channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}


def test_checkpoint_import_matches_numpy_forward(imported):
    model, info, t, _ = imported
    assert info["input_size"] == SIZE
    np.testing.assert_allclose(model.get_layer("block2_qkv").bias.numpy()[DIM:2 * DIM], 0)  # no k bias
    image = np.random.default_rng(1).standard_normal((SIZE, SIZE, 3)).astype(np.float32)
    ours = feature_extractor(model)(image[None]).numpy()[0]
    ref = _numpy_forward(t, image)
    assert ours.shape == (DIM,)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    # the relative position bias matters: without it the features move far beyond the tolerance
    t0 = {k: (np.zeros_like(v) if k.endswith("relative_position_bias_table") else v) for k, v in t.items()}
    assert np.abs(_numpy_forward(t0, image) - ref).max() > 1e-2


def test_relative_position_index_matches_a_pairwise_spelling():
    from gram_tf.models.beit_layers import relative_position_index

    for grid in (1, 2, 3, 14):
        np.testing.assert_array_equal(relative_position_index(grid), _rel_index(grid))


def test_bias_table_resized_from_a_224_checkpoint(tmp_path):
    from safetensors.numpy import save_file

    t = _random_timm_checkpoint(14)  # 732-row tables, as timm saves beit_base_patch16_224
    assert t["blocks.0.attn.relative_position_bias_table"].shape == (732, HEADS)
    save_file(t, str(tmp_path / "224.safetensors"))
    model, _ = build_classifier("beit_base", 2, 32, weights=str(tmp_path / "224.safetensors"))  # 2x2 grid
    table = model.get_layer("block5_attn").relative_position_bias_table.numpy()
    src = t["blocks.5.attn.relative_position_bias_table"]
    assert table.shape == (3 * 3 + 3, HEADS)
    np.testing.assert_array_equal(table[-3:], src[-3:])  # class-token rows kept
    np.testing.assert_allclose(table, resize_bias_table(src, 2))
    # a table that is constant per head stays so (bicubic weights sum to 1)
    const = np.tile(np.arange(HEADS, dtype=np.float32), (732, 1))
    np.testing.assert_allclose(resize_bias_table(const, 5), np.tile(np.arange(HEADS), (84, 1)), atol=1e-5)
    assert resize_bias_table(src, 14) is src
    with pytest.raises(GramTFError, match="not \\(2g-1\\)\\^2 \\+ 3"):
        resize_bias_table(src[:100], 2)


def test_bad_checkpoints_list_the_names(imported, tmp_path):
    from safetensors.numpy import save_file

    model, _, t, _ = imported
    layers = {layer.name: layer for layer in model.layers}
    before = model.get_layer("block1_proj").kernel.numpy().copy()
    broken = dict(t)
    del broken["blocks.0.gamma_2"], broken["blocks.3.attn.v_bias"]
    broken["blocks.0.attn.k_bias_extra"] = np.zeros(3, np.float32)
    broken["blocks.0.attn.relative_position_index"] = np.zeros((10, 10), np.int64)  # a recomputed buffer: ignored
    save_file(broken, str(tmp_path / "b.safetensors"))
    with pytest.raises(GramTFError) as e:
        load_checkpoint(layers, tmp_path / "b.safetensors", SPEC, SIZE // PATCH)
    msg = str(e.value)
    assert "missing blocks.0.gamma_2, blocks.3.attn.v_bias" in msg and "unexpected blocks.0.attn.k_bias_extra" in msg
    assert "relative_position_index" not in msg
    shaped = dict(t)
    shaped["blocks.1.attn.proj.weight"] = np.zeros((10, 10), np.float32)
    shaped["blocks.2.attn.relative_position_bias_table"] = np.zeros((12, 5), np.float32)  # wrong head count
    save_file(shaped, str(tmp_path / "s.safetensors"))
    with pytest.raises(GramTFError, match="mis-shaped.*block1_proj.*block2_attn"):
        load_checkpoint(layers, tmp_path / "s.safetensors", SPEC, SIZE // PATCH)
    np.testing.assert_array_equal(model.get_layer("block1_proj").kernel.numpy(), before)  # untouched
    with pytest.raises(GramTFError, match="not a multiple of 16"):
        build_classifier("beit_base", 2, 40, weights="none")
    assert len(expected_names({"depth": 2})) == 3 + 2 * 16 + 2


def test_expected_names_and_shapes_match_timm():
    if not SHARED_JSON.exists():
        pytest.skip(f"{SHARED_JSON} is absent (../shared is only on developer and CI machines)")
    ref = json.loads(SHARED_JSON.read_text())
    timm = {k: tuple(v) for k, v in ref["tensors"].items() if not k.startswith("head.")}
    ours = expected_shapes(SPEC, grid=14)
    assert sorted(ours) == sorted(expected_names(SPEC))
    assert ours == timm
    cfg = ref["pretrained_cfg"]
    pre = get_backbone("beit_base").preprocessing
    assert np.allclose(np.array(cfg["mean"]) * 255, pre["mean"]) and np.allclose(np.array(cfg["std"]) * 255, pre["std"])
    assert cfg["input_size"] == [3, 224, 224]


def test_projections_are_prunable_and_glue_is_not(imported):
    from gram_tf.optimize import prunable_layer_report

    report = prunable_layer_report(imported[0])
    prunable = set(report["prunable"])
    assert {"patch_embed", "block0_qkv", "block0_proj", "block11_fc1", "block11_fc2", "head_dense"} <= prunable
    assert sum(name.startswith("block") for name in prunable) == 4 * DEPTH
    skipped = {s["layer"]: s["reason"] for s in report["skipped"]}
    for name in ("block0_attn", "block0_gamma1", "block11_gamma2", "class_token"):
        assert skipped[name] == "declares no prunable weights"


def test_save_and_load_round_trip(tmp_path):
    """A small-width BEiT classifier (the same layers as beit_base, saved in a second, not thirty)."""
    import tf_keras

    from gram_tf.models import beit_layers, load_model, vit_layers

    model = _small_beit_classifier(SIZE)
    model.save(str(tmp_path / "beit.keras"))
    x = np.random.default_rng(2).standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    with tf_keras.utils.custom_object_scope({**vit_layers.CUSTOM_OBJECTS, **beit_layers.CUSTOM_OBJECTS}):
        loaded = tf_keras.models.load_model(str(tmp_path / "beit.keras"), compile=False, safe_mode=True)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.get_layer("block1_attn").relative_position_bias_table.numpy(),
                                  model.get_layer("block1_attn").relative_position_bias_table.numpy())
    # gram_tf's own loader finds the layers through the module beit.py registered
    np.testing.assert_allclose(load_model(tmp_path / "beit.keras")(x).numpy(), model(x).numpy(), atol=1e-6)


def _small_beit_classifier(size):
    """BEiT layers at a small width and depth: the exported graph's ops are those of beit_base."""
    import tf_keras

    from gram_tf.models.beit_layers import beit_backbone

    inp = tf_keras.Input((size, size, 3), name="image")
    feats = beit_backbone(inp, 64, 2, 4, PATCH)
    out = tf_keras.layers.Dense(2, activation="softmax", name="head_dense")(feats)
    model = tf_keras.Model(inp, out)
    rng = np.random.default_rng(3)
    for layer in model.layers:  # random tables and gammas, so the folded constants are not trivial
        if layer.name.endswith(("_attn", "_gamma1", "_gamma2")):
            layer.set_weights([rng.standard_normal(layer.get_weights()[0].shape).astype(np.float32)])
    return model


def test_converts_to_fp32_and_int8_without_gather():
    from ai_edge_litert.interpreter import Interpreter

    from gram_tf.convert import convert_model
    from gram_tf.deploy.profile import delegation

    size = SIZE
    model = _small_beit_classifier(size)
    pre = {"resize": "squash", **get_backbone("beit_base").preprocessing}
    rep = np.random.default_rng(0).integers(0, 255, (4, size, size, 3), np.uint8)
    fp32 = convert_model(model, "fp32", size, pre, rep)
    d = delegation(fp32)
    assert "GATHER" not in d["op_counts"] and d["fallback_nodes"] == 0 and d["partitions"] == 1
    int8 = convert_model(model, "int8", size, pre, rep)
    assert "GATHER" not in delegation(int8)["op_counts"]
    it = Interpreter(model_content=int8)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert np.dtype(inp["dtype"]) == np.int8 and list(inp["shape"]) == [1, size, size, 3]
    it.set_tensor(inp["index"], np.zeros(inp["shape"], np.int8))
    it.invoke()
    assert it.get_tensor(out["index"]).shape == (1, 2)
    for details in it._get_ops_details():
        assert details["op_name"] != "GATHER"
    # every tensor is static apart from the batch and has rank <= 6
    assert max(len(t["shape"]) for t in it.get_tensor_details()) <= 6


def test_hugging_face_names_load_the_same_weights(imported, tmp_path):
    """A BeitForImageClassification state dict (`beit.` prefix, separate query/key/value, lambda_1/2,
    pooler LayerNorm) loads the same weights as timm's file."""
    import re

    from safetensors.numpy import save_file

    model, _, t, _ = imported
    block = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    hf = {"classifier.weight": np.zeros((1000, 768), np.float32), "beit.embeddings.mask_token": np.zeros((1, 1, 768), np.float32)}
    for key, value in t.items():
        m = re.match(r"blocks\.(\d+)\.(.+)$", key)
        if key.startswith("head"):
            continue
        if not m:
            hf["beit." + {"cls_token": "embeddings.cls_token", "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
                          "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
                          "fc_norm.weight": "pooler.layernorm.weight", "fc_norm.bias": "pooler.layernorm.bias"}[key]] = value
            continue
        i, rest = m.groups()
        p = f"beit.encoder.layer.{i}."
        if rest == "attn.qkv.weight":
            for part, arr in zip(("query", "key", "value"), np.split(value, 3, axis=0)):
                hf[p + f"attention.attention.{part}.weight"] = arr
        elif rest in ("attn.q_bias", "attn.v_bias"):
            hf[p + f"attention.attention.{'query' if rest == 'attn.q_bias' else 'value'}.bias"] = value
        elif rest in ("gamma_1", "gamma_2"):
            hf[p + rest.replace("gamma", "lambda")] = value
        elif rest == "attn.relative_position_bias_table":
            hf[p + "attention.attention.relative_position_bias.relative_position_bias_table"] = value
        else:
            stem, kind = rest.rsplit(".", 1)
            hf[p + f"{block[stem]}.{kind}"] = value
    save_file(hf, str(tmp_path / "hf.safetensors"))
    again, _ = build_classifier("beit_base", 2, SIZE, weights=str(tmp_path / "hf.safetensors"))
    for a, b in zip(model.layers, again.layers, strict=True):
        if not a.name.startswith("head_"):
            for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
                np.testing.assert_array_equal(wa, wb, err_msg=a.name)
