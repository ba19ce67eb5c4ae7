"""ViT/DeiT: checkpoint import against an independent numpy forward pass, pruning, LiteRT int8."""
import numpy as np
import pytest
from scipy.special import erf

from gram_tf.errors import GramTFError
from gram_tf.models import build_classifier, feature_extractor, list_backbones
from gram_tf.models.vit import SPECS, expected_names

PATCH = 16


def _random_timm_checkpoint(name, grid, seed=0, hf=False):
    dim, depth, heads, distilled, _ = SPECS[name]
    rng = np.random.default_rng(seed)
    t = {}
    n_tok = 2 if distilled else 1

    def r(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t["cls_token"] = r(1, 1, dim)
    if distilled:
        t["dist_token"] = r(1, 1, dim)
    t["pos_embed"] = r(1, grid * grid + n_tok, dim)
    t["patch_embed.proj.weight"] = r(dim, 3, PATCH, PATCH)
    t["patch_embed.proj.bias"] = r(dim)
    for i in range(depth):
        b = f"blocks.{i}"
        t[f"{b}.norm1.weight"], t[f"{b}.norm1.bias"] = 1 + r(dim), r(dim)
        t[f"{b}.attn.qkv.weight"], t[f"{b}.attn.qkv.bias"] = r(3 * dim, dim), r(3 * dim)
        t[f"{b}.attn.proj.weight"], t[f"{b}.attn.proj.bias"] = r(dim, dim), r(dim)
        t[f"{b}.norm2.weight"], t[f"{b}.norm2.bias"] = 1 + r(dim), r(dim)
        t[f"{b}.mlp.fc1.weight"], t[f"{b}.mlp.fc1.bias"] = r(4 * dim, dim), r(4 * dim)
        t[f"{b}.mlp.fc2.weight"], t[f"{b}.mlp.fc2.bias"] = r(dim, 4 * dim), r(dim)
    t["norm.weight"], t["norm.bias"] = 1 + r(dim), r(dim)
    t["head.weight"], t["head.bias"] = r(1000, dim), r(1000)  # ImageNet head: ignored
    return t


def _numpy_forward(t, image, heads, distilled):
    """Independent ViT forward in numpy, on timm's (torch-layout) tensors."""
    def ln(x, w, b, eps=1e-6):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w + b

    s = image.shape[0]
    g = s // PATCH
    patches = image.reshape(g, PATCH, g, PATCH, 3).transpose(0, 2, 4, 1, 3).reshape(g * g, 3 * PATCH * PATCH)
    w = t["patch_embed.proj.weight"]
    x = patches @ w.reshape(w.shape[0], -1).T + t["patch_embed.proj.bias"]
    toks = [t["cls_token"][0]] + ([t["dist_token"][0]] if distilled else [])
    x = np.concatenate(toks + [x], 0) + t["pos_embed"][0]
    dim = x.shape[1]
    hd = dim // heads
    depth = len({k.split(".")[1] for k in t if k.startswith("blocks.")})
    for i in range(depth):
        b = f"blocks.{i}"
        y = ln(x, t[f"{b}.norm1.weight"], t[f"{b}.norm1.bias"])
        qkv = y @ t[f"{b}.attn.qkv.weight"].T + t[f"{b}.attn.qkv.bias"]
        q, k, v = np.split(qkv, 3, axis=1)
        outs = []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            a = q[:, sl] @ k[:, sl].T / np.sqrt(hd)
            a = np.exp(a - a.max(1, keepdims=True))
            a /= a.sum(1, keepdims=True)
            outs.append(a @ v[:, sl])
        x = x + np.concatenate(outs, 1) @ t[f"{b}.attn.proj.weight"].T + t[f"{b}.attn.proj.bias"]
        y = ln(x, t[f"{b}.norm2.weight"], t[f"{b}.norm2.bias"])
        y = y @ t[f"{b}.mlp.fc1.weight"].T + t[f"{b}.mlp.fc1.bias"]
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
        x = x + y @ t[f"{b}.mlp.fc2.weight"].T + t[f"{b}.mlp.fc2.bias"]
    x = ln(x, t["norm.weight"], t["norm.bias"])
    return (x[0] + x[1]) / 2 if distilled else x[0]


def test_transformers_are_registered():
    names = {b.name for b in list_backbones()}
    assert {"vit_tiny_16", "vit_small_16", "vit_base_16", "deit_tiny", "deit_small", "deit_base",
            "deit_tiny_distilled", "deit_small_distilled", "deit_base_distilled"} <= names


@pytest.mark.parametrize("name,fmt", [("deit_tiny_distilled", "safetensors"), ("vit_tiny_16", "npz")])
def test_checkpoint_import_matches_numpy_forward(name, fmt, tmp_path):
    from safetensors.numpy import save_file

    size = 48
    t = _random_timm_checkpoint(name, size // PATCH)
    path = tmp_path / f"ckpt.{fmt}"
    if fmt == "safetensors":
        save_file(t, str(path))
    else:
        np.savez(path, **t)
    model, info = build_classifier(name, 2, size, weights=str(path))
    image = np.random.default_rng(1).standard_normal((size, size, 3)).astype(np.float32)
    ours = feature_extractor(model)(image[None]).numpy()[0]
    ref = _numpy_forward(t, image, SPECS[name][2], SPECS[name][3])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_hugging_face_names_and_position_interpolation(tmp_path):
    from safetensors.numpy import save_file

    t = _random_timm_checkpoint("vit_tiny_16", 14)  # a 224 px checkpoint ...
    hf = {}
    for k, v in t.items():
        if k.startswith("blocks."):
            i, rest = k.split(".", 2)[1:]
            if rest.startswith("attn.qkv"):
                kind = rest.rsplit(".", 1)[1]
                for part, arr in zip(("query", "key", "value"), np.split(v, 3, axis=0)):
                    hf[f"vit.encoder.layer.{i}.attention.attention.{part}.{kind}"] = arr
                continue
            mapping = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
                       "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
            stem, kind = rest.rsplit(".", 1)
            hf[f"vit.encoder.layer.{i}.{mapping[stem]}.{kind}"] = v
    hf.update({"vit.embeddings.cls_token": t["cls_token"], "vit.embeddings.position_embeddings": t["pos_embed"],
               "vit.embeddings.patch_embeddings.projection.weight": t["patch_embed.proj.weight"],
               "vit.embeddings.patch_embeddings.projection.bias": t["patch_embed.proj.bias"],
               "vit.layernorm.weight": t["norm.weight"], "vit.layernorm.bias": t["norm.bias"],
               "classifier.weight": np.zeros((2, 192), np.float32)})
    save_file(hf, str(tmp_path / "hf.safetensors"))
    model, _ = build_classifier("vit_tiny_16", 2, 64, weights=str(tmp_path / "hf.safetensors"))  # ... at 64 px
    pos = model.get_layer("pos_embed").pos_embed.numpy()
    assert pos.shape == (1, 1 + 16, 192)
    np.testing.assert_allclose(pos[0, 0], t["pos_embed"][0, 0])  # class token position kept
    np.testing.assert_allclose(model.get_layer("block3_qkv").kernel.numpy(), t["blocks.3.attn.qkv.weight"].T)


def test_bad_checkpoints_list_the_names(tmp_path):
    from safetensors.numpy import save_file

    t = _random_timm_checkpoint("deit_tiny", 2)
    broken = dict(t)
    del broken["blocks.0.mlp.fc1.bias"]
    broken["blocks.0.attn.rel_pos"] = np.zeros(3, np.float32)
    save_file(broken, str(tmp_path / "b.safetensors"))
    with pytest.raises(GramTFError) as e:
        build_classifier("deit_tiny", 2, 32, weights=str(tmp_path / "b.safetensors"))
    assert "missing blocks.0.mlp.fc1.bias" in str(e.value) and "unexpected blocks.0.attn.rel_pos" in str(e.value)
    shaped = dict(t)
    shaped["blocks.1.attn.proj.weight"] = np.zeros((10, 10), np.float32)
    save_file(shaped, str(tmp_path / "s.safetensors"))
    with pytest.raises(GramTFError, match="mis-shaped.*block1_proj"):
        build_classifier("deit_tiny", 2, 32, weights=str(tmp_path / "s.safetensors"))
    # tensors that are not float, or not finite, are refused (never cast or loaded silently)
    ints = {k: (v * 100).astype(np.int64) if k == "pos_embed" else v for k, v in t.items()}
    save_file(ints, str(tmp_path / "i.safetensors"))
    with pytest.raises(GramTFError, match="are int64, not floating point"):
        build_classifier("deit_tiny", 2, 32, weights=str(tmp_path / "i.safetensors"))
    nans = dict(t, pos_embed=np.full_like(t["pos_embed"], np.nan))
    save_file(nans, str(tmp_path / "n.safetensors"))
    with pytest.raises(GramTFError, match="NaN or infinite"):
        build_classifier("deit_tiny", 2, 32, weights=str(tmp_path / "n.safetensors"))
    with pytest.raises(GramTFError, match="not a multiple of 16 px, which deit_tiny needs"):
        build_classifier("deit_tiny", 2, 40, weights="none")
    assert len(expected_names({"depth": 2, "distilled": True})) == 7 + 24


def test_partial_qat_on_a_transformer_reports_float_layers_and_converts(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from gram_tf.convert import convert_model
    from gram_tf.optimize import quantize_aware

    model, info = build_classifier("deit_tiny", 2, 32, weights="none")
    qat, report = quantize_aware(model)
    floating = {f["layer"] for f in report["float"]}
    assert "block0_norm1" in floating and "block0_attn" in floating and "class_token" in floating
    assert "block0_qkv" in report["quantizable"] and "block11_fc2" in report["quantizable"]
    rep = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), np.uint8)
    blob = convert_model(qat, "qat-int8", 32, info["preprocessing"], rep)
    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    assert np.dtype(it.get_input_details()[0]["dtype"]) == np.int8
    x = np.zeros(it.get_input_details()[0]["shape"], np.int8)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])
    assert out.shape == (1, 2)


def _gelu_model(gelu):
    import tensorflow as tf
    import tf_keras

    from gram_tf.models.vit_layers import GELU

    inp = tf_keras.Input((8,), batch_size=1)
    model = tf_keras.Model(inp, GELU(approximate=(gelu == "tanh"))(tf_keras.layers.Dense(8)(inp)))
    x = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    return model, tf.function(lambda t: model(t, training=False)), tf.TensorSpec([1, 8], tf.float32), x


@pytest.mark.parametrize("gelu", ["erf", "tanh"])
def test_gelu_is_exact_and_becomes_one_tflite_op(gelu):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model, fn, spec, x = _gelu_model(gelu)
    pre = x @ model.layers[1].kernel.numpy() + model.layers[1].bias.numpy()
    if gelu == "erf":
        np.testing.assert_allclose(model(x).numpy(), 0.5 * pre * (1 + erf(pre / np.sqrt(2))), atol=1e-6)
    it = Interpreter(model_content=tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function(spec)]).convert())
    it.allocate_tensors()
    assert "GELU" in {d["op_name"] for d in it._get_ops_details()}


@pytest.mark.parametrize("gelu", ["erf", "tanh"])
def test_gelu_exports_to_onnx(gelu):
    """tf.nn.gelu(approximate=False) would lower to Erfc, which tf2onnx rejects; ours exports."""
    tf2onnx = pytest.importorskip("tf2onnx", reason="ONNX export needs the 'peers' extra (tf2onnx)")
    ort = pytest.importorskip("onnxruntime", reason="needs the 'peers' extra (onnxruntime)")
    model, fn, spec, x = _gelu_model(gelu)
    onnx_model, _ = tf2onnx.convert.from_function(fn, input_signature=(spec,), opset=17)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], model(x).numpy(), atol=1e-5)
