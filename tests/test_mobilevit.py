"""MobileViT: timm checkpoint import against an independent numpy forward pass (NCHW, as timm's
ByobNet + MobileVitBlock compute it), the name mapping against timm's own listing."""
import json
from pathlib import Path

import numpy as np
import pytest

from gram_tf.errors import GramTFError
from gram_tf.models import build_classifier, feature_extractor
from gram_tf.models.mobilevit import SPECS, expected_shapes, make_divisible

from .torch_reference import attention, batch_norm, conv2d, layer_norm, silu

TIMM = Path(__file__).resolve().parents[2] / "shared" / "timm_checkpoints"


def _random_checkpoint(spec, seed=0):
    rng = np.random.default_rng(seed)
    t = {}
    for name, shape in expected_shapes(spec).items():
        if name.endswith("num_batches_tracked"):
            t[name] = np.array(7, np.int64)
        elif name.endswith("running_var"):
            t[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif name.endswith("running_mean"):
            t[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif name.endswith(".bn.weight") or "norm" in name and name.endswith(".weight"):
            t[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif name.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            t[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        else:
            t[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    t["head.fc.weight"] = rng.standard_normal((1000, spec["features"])).astype(np.float32)  # ignored
    t["head.fc.bias"] = np.zeros(1000, np.float32)
    return t


def _conv_bn_act(x, t, prefix, stride=1, act=True, groups=1):
    w = t[f"{prefix}.conv.weight"]
    x = batch_norm(conv2d(x, w, stride=stride, padding=(w.shape[-1] - 1) // 2, groups=groups), t, f"{prefix}.bn")
    return silu(x) if act else x


def _numpy_forward(t, image, spec):
    """timm MobileViT forward on one CHW image; returns pre-logits (pooled final_conv)."""
    x = _conv_bn_act(image, t, "stem", stride=2)
    for s, stage in enumerate(spec["stages"]):
        kind, out, stride, ratio = stage[:4]
        for b in range(stage[4] if kind == "ir" else 1):
            p = f"stages.{s}.{b}"
            mid = make_divisible(x.shape[0] * ratio)
            y = _conv_bn_act(x, t, f"{p}.conv1_1x1")
            y = _conv_bn_act(y, t, f"{p}.conv2_kxk", stride=stride if b == 0 else 1, groups=mid)
            y = _conv_bn_act(y, t, f"{p}.conv3_1x1", act=False)
            x = x + y if y.shape == x.shape and (b > 0 or stride == 1) else y
        if kind == "mv":
            p, depth = f"stages.{s}.1", stage[5]
            shortcut = x
            y = _conv_bn_act(x, t, f"{p}.conv_kxk")
            y = conv2d(y, t[f"{p}.conv_1x1.weight"])
            c, h, w = y.shape
            # timm's unfold: [C, H, W] -> [P, N, C] with P = (ph, pw), N = (nh, nw)
            seq = y.reshape(c, h // 2, 2, w // 2, 2).transpose(2, 4, 1, 3, 0).reshape(4, -1, c)
            outs = []
            for z in seq:
                for i in range(depth):
                    q = f"{p}.transformer.{i}"
                    u = layer_norm(z, t[f"{q}.norm1.weight"], t[f"{q}.norm1.bias"], 1e-5)
                    z = z + attention(u, t[f"{q}.attn.qkv.weight"], t[f"{q}.attn.qkv.bias"],
                                      t[f"{q}.attn.proj.weight"], t[f"{q}.attn.proj.bias"], heads=4)
                    u = layer_norm(z, t[f"{q}.norm2.weight"], t[f"{q}.norm2.bias"], 1e-5)
                    u = silu(u @ t[f"{q}.mlp.fc1.weight"].T + t[f"{q}.mlp.fc1.bias"])
                    z = z + u @ t[f"{q}.mlp.fc2.weight"].T + t[f"{q}.mlp.fc2.bias"]
                outs.append(layer_norm(z, t[f"{p}.norm.weight"], t[f"{p}.norm.bias"], 1e-5))
            y = np.stack(outs).reshape(2, 2, h // 2, w // 2, c).transpose(4, 2, 0, 3, 1).reshape(c, h, w)
            y = _conv_bn_act(y, t, f"{p}.conv_proj")
            x = _conv_bn_act(np.concatenate([shortcut, y], 0), t, f"{p}.conv_fusion")
    x = _conv_bn_act(x, t, "final_conv")
    return x.mean(axis=(1, 2))


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevit_xs"])
def test_checkpoint_import_matches_numpy_forward(name, tmp_path):
    from safetensors.numpy import save_file

    size = 64
    t = _random_checkpoint(SPECS[name])
    save_file(t, str(tmp_path / "ckpt.safetensors"))
    model, info = build_classifier(name, 2, size, weights=str(tmp_path / "ckpt.safetensors"))
    assert info["preprocessing"]["std"] == [255.0] * 3 and info["preprocessing"]["channel_order"] == "RGB"
    image = np.random.default_rng(1).uniform(0, 1, (size, size, 3)).astype(np.float32)
    ours = feature_extractor(model)(image[None]).numpy()[0]
    ref = _numpy_forward(t, image.transpose(2, 0, 1).astype(np.float64), SPECS[name])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_names_and_shapes_match_timm(name):
    path = TIMM / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path} absent (../shared/timm_checkpoints is a developer-side listing)")
    listing = json.loads(path.read_text())["tensors"]
    timm = {k: tuple(v) for k, v in listing.items() if not k.startswith("head.fc.")}
    assert expected_shapes(SPECS[name]) == timm


def test_bad_checkpoints_and_sizes(tmp_path):
    from safetensors.numpy import save_file

    t = _random_checkpoint(SPECS["mobilevit_xxs"])
    broken = dict(t)
    del broken["stages.3.1.transformer.2.attn.qkv.bias"]
    save_file(broken, str(tmp_path / "b.safetensors"))
    with pytest.raises(GramTFError, match="missing stages.3.1.transformer.2.attn.qkv.bias"):
        build_classifier("mobilevit_xxs", 2, 64, weights=str(tmp_path / "b.safetensors"))
    shaped = dict(t)
    shaped["final_conv.conv.weight"] = np.zeros((320, 64, 1, 1), np.float32)
    save_file(shaped, str(tmp_path / "s.safetensors"))
    with pytest.raises(GramTFError, match="mis-shaped.*final_conv"):
        build_classifier("mobilevit_xxs", 2, 64, weights=str(tmp_path / "s.safetensors"))
    with pytest.raises(GramTFError, match="not a multiple of 64 px, which mobilevit_xxs needs"):
        build_classifier("mobilevit_xxs", 2, 224, weights="none")


def test_hugging_face_file_loads_the_same_weights_and_takes_bgr(tmp_path):
    """A MobileViTForImageClassification state dict (Apple's weights, Hugging Face names) loads the
    same weights as the timm file, and the model records BGR input (Hugging Face's processor flips
    the channels)."""
    import re

    from safetensors.numpy import save_file

    spec = SPECS["mobilevit_xxs"]
    t = _random_checkpoint(spec)
    conv = {"conv1_1x1": "expand_1x1", "conv2_kxk": "conv_3x3", "conv3_1x1": "reduce_1x1", "conv_kxk": "conv_kxk",
            "conv_proj": "conv_projection", "conv_fusion": "fusion"}
    block = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}

    def hf_conv(rest):  # conv.weight / bn.X -> convolution.weight / normalization.X
        return rest.replace("conv.", "convolution.", 1) if rest.startswith("conv.") else rest.replace("bn.", "normalization.", 1)

    hf = {"mobilevit.classifier.weight": t["head.fc.weight"]}
    for key, value in t.items():
        if key.startswith("head."):
            continue
        if key.startswith(("stem.", "final_conv.")):
            top = "conv_stem" if key.startswith("stem.") else "conv_1x1_exp"
            hf[f"mobilevit.{top}.{hf_conv(key.split('.', 1)[1])}"] = value
            continue
        s, b, rest = re.match(r"stages\.(\d+)\.(\d+)\.(.+)$", key).groups()
        p = f"mobilevit.encoder.layer.{s}."
        if rest.startswith("transformer."):
            _, j, part = rest.split(".", 2)
            stem, kind = part.rsplit(".", 1)
            if stem == "attn.qkv":
                for name, arr in zip(("query", "key", "value"), np.split(value, 3, axis=0)):
                    hf[p + f"transformer.layer.{j}.attention.attention.{name}.{kind}"] = arr
            else:
                hf[p + f"transformer.layer.{j}.{block[stem]}.{kind}"] = value
        elif rest.startswith("norm."):
            hf[p + "layernorm." + rest.split(".", 1)[1]] = value
        elif rest.startswith("conv_1x1."):
            hf[p + "conv_1x1.convolution." + rest.split(".", 1)[1]] = value
        else:
            part, tail = rest.split(".", 1)
            if int(s) < 2:
                where = f"layer.{b}."
            else:
                where = "downsampling_layer." if b == "0" else ""
            hf[p + where + f"{conv[part]}.{hf_conv(tail)}"] = value
    save_file(t, str(tmp_path / "timm.safetensors"))
    save_file(hf, str(tmp_path / "hf.safetensors"))
    ours, info_timm = build_classifier("mobilevit_xxs", 2, 64, weights=str(tmp_path / "timm.safetensors"))
    theirs, info_hf = build_classifier("mobilevit_xxs", 2, 64, weights=str(tmp_path / "hf.safetensors"))
    for a, b in zip(ours.layers, theirs.layers, strict=True):
        if not a.name.startswith("head_"):
            for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
                np.testing.assert_array_equal(wa, wb, err_msg=a.name)
    assert info_timm["preprocessing"]["channel_order"] == "RGB"
    assert info_hf["preprocessing"]["channel_order"] == "BGR" and info_hf["preprocessing"]["std"] == [255.0] * 3
