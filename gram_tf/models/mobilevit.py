"""MobileViT (v1) backbones: registration and timm checkpoint import.

timm 1.0 builds MobileViT as a ByobNet (`stem`, `stages.S.B` of inverted-residual `bottle` blocks
and one `mobilevit` block per transformer stage, `final_conv`, `head.fc`); its checkpoints take RGB
pixels in [0, 1] (mean 0, std 1 in timm's config). Hugging Face's `apple/mobilevit-*` files (Apple's
cvnets weights, renamed) are read too: same layers, separate query / key / value, and their image
processor flips the channels (`do_flip_channel_order`), so a model loaded from one takes BGR and
records that in its preprocessing.
"""
from __future__ import annotations

import re

from .checkpoint import (CheckpointLoader, assign, batch_norm, batch_norm_names, check_names,
                         conv_kernel, dense_kernel, depthwise_kernel, fuse_qkv, read_tensors)
from .registry import Backbone, register, register_layer_module

# timm's model configs. Stage: ("ir", channels, stride, expansion, blocks) or
# ("mv", channels, stride, expansion, transformer width, transformer depth): an inverted residual
# then a MobileViT block (patch 2x2, 4 heads, MLP ratio 2).
SPECS = {
    "mobilevit_xxs": {"stem": 16, "features": 320, "stages": (
        ("ir", 16, 1, 2.0, 1), ("ir", 24, 2, 2.0, 3), ("mv", 48, 2, 2.0, 64, 2),
        ("mv", 64, 2, 2.0, 80, 4), ("mv", 80, 2, 2.0, 96, 3))},
    "mobilevit_xs": {"stem": 16, "features": 384, "stages": (
        ("ir", 32, 1, 4.0, 1), ("ir", 48, 2, 4.0, 3), ("mv", 64, 2, 4.0, 96, 2),
        ("mv", 80, 2, 4.0, 120, 4), ("mv", 96, 2, 4.0, 144, 3))},
    "mobilevit_s": {"stem": 16, "features": 640, "stages": (
        ("ir", 32, 1, 4.0, 1), ("ir", 64, 2, 4.0, 3), ("mv", 96, 2, 4.0, 144, 2),
        ("mv", 128, 2, 4.0, 192, 4), ("mv", 160, 2, 4.0, 240, 3))},
}
# the map before the last MobileViT block is input/32 and must split into 2x2 patches (timm
# resizes it bilinearly otherwise, which we do not port): inputs are multiples of 64 px
SIZE_MULTIPLE = 64
PRE_UNIT = {"channel_order": "RGB", "mean": [0.0] * 3, "std": [255.0] * 3}  # pixels / 255: timm's [0, 1]
PRE_UNIT_BGR = {**PRE_UNIT, "channel_order": "BGR"}  # Hugging Face / Apple cvnets files
_IGNORED = re.compile(r"^head\.fc\.|.*\.num_batches_tracked$")


def make_divisible(v, divisor: int = 8) -> int:
    """timm's channel rounding: nearest multiple of 8, never more than 10 % below v."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_shapes(prefix, out_chs, in_chs, k, depthwise=False):
    shapes = {f"{prefix}.conv.weight": (out_chs, 1 if depthwise else in_chs, k, k)}
    for name in batch_norm_names(f"{prefix}.bn"):
        shapes[name] = () if name.endswith("num_batches_tracked") else (out_chs,)
    return shapes


def _blocks(spec):
    """(timm prefix, our prefix, kind, in, out, stride, ratio, extra) for every block, in order."""
    chs = spec["stem"]
    for s, stage in enumerate(spec["stages"]):
        kind, out, stride, ratio = stage[:4]
        n = stage[4] if kind == "ir" else 1
        for b in range(n):
            yield f"stages.{s}.{b}", f"s{s}b{b}", "ir", chs, out, stride if b == 0 else 1, ratio, None
            chs = out
        if kind == "mv":
            yield f"stages.{s}.1", f"s{s}b1", "mv", chs, out, 1, ratio, stage[4:6]


def expected_shapes(spec: dict) -> dict:
    """Every tensor a timm checkpoint of this MobileViT holds (torch layouts), head.fc excluded."""
    shapes = _conv_bn_shapes("stem", spec["stem"], 3, 3)
    chs = spec["stem"]
    for src, _, kind, cin, cout, _, ratio, extra in _blocks(spec):
        if kind == "ir":
            mid = make_divisible(cin * ratio)
            shapes.update(_conv_bn_shapes(f"{src}.conv1_1x1", mid, cin, 1))
            shapes.update(_conv_bn_shapes(f"{src}.conv2_kxk", mid, mid, 3, depthwise=True))
            shapes.update(_conv_bn_shapes(f"{src}.conv3_1x1", cout, mid, 1))
        else:
            dim, depth = extra
            shapes.update(_conv_bn_shapes(f"{src}.conv_kxk", cin, cin, 3))
            shapes[f"{src}.conv_1x1.weight"] = (dim, cin, 1, 1)
            for i in range(depth):
                t = f"{src}.transformer.{i}"
                shapes.update({
                    f"{t}.norm1.weight": (dim,), f"{t}.norm1.bias": (dim,),
                    f"{t}.attn.qkv.weight": (3 * dim, dim), f"{t}.attn.qkv.bias": (3 * dim,),
                    f"{t}.attn.proj.weight": (dim, dim), f"{t}.attn.proj.bias": (dim,),
                    f"{t}.norm2.weight": (dim,), f"{t}.norm2.bias": (dim,),
                    f"{t}.mlp.fc1.weight": (2 * dim, dim), f"{t}.mlp.fc1.bias": (2 * dim,),
                    f"{t}.mlp.fc2.weight": (dim, 2 * dim), f"{t}.mlp.fc2.bias": (dim,),
                })
            shapes.update({f"{src}.norm.weight": (dim,), f"{src}.norm.bias": (dim,)})
            shapes.update(_conv_bn_shapes(f"{src}.conv_proj", cout, dim, 1))
            shapes.update(_conv_bn_shapes(f"{src}.conv_fusion", cout, cin + cout, 3))
        chs = cout
    shapes.update(_conv_bn_shapes("final_conv", spec["features"], chs, 1))
    return shapes


# Hugging Face MobileViTForImageClassification -> timm, per part of a block
_HF_CONV = {"expand_1x1": "conv1_1x1", "conv_3x3": "conv2_kxk", "reduce_1x1": "conv3_1x1",
            "conv_kxk": "conv_kxk", "conv_projection": "conv_proj", "fusion": "conv_fusion"}
_HF_TRANSFORMER = {"layernorm_before": "norm1", "attention.output.dense": "attn.proj", "layernorm_after": "norm2",
                   "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}


def _hf_conv(rest: str) -> str:
    """`convolution.weight` / `normalization.X` -> timm's `conv.weight` / `bn.X`."""
    return rest.replace("convolution.", "conv.", 1).replace("normalization.", "bn.", 1)


def to_timm_names(tensors: dict) -> tuple[dict, bool]:
    """Rename a Hugging Face MobileViT (v1) state dict to timm's names; returns (tensors, renamed).
    Hugging Face stages 0-1 hold `layer.J` inverted residuals, stages 2-4 a `downsampling_layer`
    (timm's block 0) and the MobileViT block's parts (timm's block 1)."""
    if not any(k.startswith(("mobilevit.", "conv_stem.", "encoder.layer.")) for k in tensors):
        return dict(tensors), False
    out, qkv = {}, {}
    for key, value in tensors.items():
        k = re.sub(r"^mobilevit\.", "", key)
        if k.startswith("classifier."):
            out["head.fc." + k.split(".", 1)[1]] = value
            continue
        if k.startswith("conv_stem."):
            out["stem." + _hf_conv(k.split(".", 1)[1])] = value
            continue
        if k.startswith("conv_1x1_exp."):
            out["final_conv." + _hf_conv(k.split(".", 1)[1])] = value
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.layer\.(\d+)\.(\w+)\.(.+)$", k)
        if m:  # inverted residuals of stages 0-1
            out[f"stages.{m.group(1)}.{m.group(2)}.{_HF_CONV[m.group(3)]}.{_hf_conv(m.group(4))}"] = value
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.downsampling_layer\.(\w+)\.(.+)$", k)
        if m:
            out[f"stages.{m.group(1)}.0.{_HF_CONV[m.group(2)]}.{_hf_conv(m.group(3))}"] = value
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m:
            s_, t_, part, kind = m.groups()
            q = re.match(r"attention\.attention\.(query|key|value)$", part)
            if q:
                qkv.setdefault(f"stages.{s_}.1.transformer.{t_}.attn.qkv.{kind}", {})[q.group(1)] = value
            else:
                out[f"stages.{s_}.1.transformer.{t_}.{_HF_TRANSFORMER.get(part, part)}.{kind}"] = value
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(conv_kxk|conv_projection|fusion|conv_1x1|layernorm)\.(.+)$", k)
        if m:
            s_, part, rest = m.groups()
            if part == "conv_1x1":
                out[f"stages.{s_}.1.conv_1x1.{rest.replace('convolution.', '', 1)}"] = value
            elif part == "layernorm":
                out[f"stages.{s_}.1.norm.{rest}"] = value
            else:
                out[f"stages.{s_}.1.{_HF_CONV[part]}.{_hf_conv(rest)}"] = value
            continue
        out[k] = value
    for name, parts in qkv.items():
        out[name] = fuse_qkv(parts, name)
    return out, True


def load_checkpoint(layers: dict, path, spec: dict):
    tensors, from_hugging_face = to_timm_names(read_tensors(path))
    check_names(path, tensors, expected_shapes(spec), _IGNORED, "this MobileViT")

    def conv_bn(src, dst, depthwise=False):
        w = tensors[f"{src}.conv.weight"]
        return [(f"{dst}_conv", [depthwise_kernel(w) if depthwise else conv_kernel(w)]),
                (f"{dst}_bn", batch_norm(tensors, f"{src}.bn"))]

    def linear(src):
        return [dense_kernel(tensors[f"{src}.weight"]), tensors[f"{src}.bias"]]

    def norm(src):
        return [tensors[f"{src}.weight"], tensors[f"{src}.bias"]]

    assignments = conv_bn("stem", "stem")
    for src, dst, kind, _, _, _, _, extra in _blocks(spec):
        if kind == "ir":
            assignments += (conv_bn(f"{src}.conv1_1x1", f"{dst}_expand")
                            + conv_bn(f"{src}.conv2_kxk", f"{dst}_dw", depthwise=True)
                            + conv_bn(f"{src}.conv3_1x1", f"{dst}_project"))
            continue
        assignments += conv_bn(f"{src}.conv_kxk", f"{dst}_local")
        assignments.append((f"{dst}_to_tokens", [conv_kernel(tensors[f"{src}.conv_1x1.weight"])]))
        for i in range(extra[1]):
            t, p = f"{src}.transformer.{i}", f"{dst}_t{i}"
            assignments += [(f"{p}_norm1", norm(f"{t}.norm1")), (f"{p}_qkv", linear(f"{t}.attn.qkv")),
                            (f"{p}_proj", linear(f"{t}.attn.proj")), (f"{p}_norm2", norm(f"{t}.norm2")),
                            (f"{p}_fc1", linear(f"{t}.mlp.fc1")), (f"{p}_fc2", linear(f"{t}.mlp.fc2"))]
        assignments.append((f"{dst}_norm", norm(f"{src}.norm")))
        assignments += conv_bn(f"{src}.conv_proj", f"{dst}_proj") + conv_bn(f"{src}.conv_fusion", f"{dst}_fusion")
    assignments += conv_bn("final_conv", "final")
    assign(path, layers, assignments)
    return {"preprocessing": dict(PRE_UNIT_BGR)} if from_hugging_face else None


def _build(bb: Backbone, inp, options):
    from .mobilevit_layers import mobilevit_backbone

    spec = SPECS[bb.name]
    feats = mobilevit_backbone(inp, spec, make_divisible)
    return CheckpointLoader(inp, feats, lambda layers, path: load_checkpoint(layers, path, spec)), feats


register_layer_module("gram_tf.models.mobilevit_layers")
for _name in SPECS:
    register(Backbone(
        name=_name, family="MobileViT", default_size=256, min_size=64, build=_build,
        preprocessing=dict(PRE_UNIT), source="gram_tf (Keras 2)", patch_size=SIZE_MULTIPLE,
        notes="weights: a timm or Hugging Face .safetensors/.npz file; input a multiple of 64 px (256 default)",
    ))
