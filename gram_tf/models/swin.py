"""Swin Transformer (timm `swin_tiny_patch4_window7_224`): registration and checkpoint import.

A timm checkpoint (`.safetensors` or `.npz`, timm >= 0.9 names: the patch merging at the start of
stages 1-3 as `layers.{s}.downsample`) is read with numpy and mapped onto our layers by name; a
missing, unexpected or mis-shaped tensor is an error that lists the names. The buffers timm
recomputes (`relative_position_index`, `attn_mask`) are recomputed here too, and ignored if a file
has them.

Input sizes: multiples of 224. The window stays 7 (so the checkpoint's bias tables fit unchanged),
and every stage grid (size/4 .. size/32) is then a multiple of 7: no window padding, which timm
would do with unmasked zero tokens. Other sizes are refused with a one-line error.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import GramTFError
from .checkpoint import (CheckpointLoader, assign, check_names, conv_kernel, dense_kernel, fuse_qkv,
                         read_tensors)
from .registry import PRE_TORCH, Backbone, gelu_choice, register, register_layer_module

PATCH = 4
WINDOW = 7
SIZE_MULTIPLE = PATCH * 2 ** 3 * WINDOW  # 224: the last stage's grid is a whole number of windows

# name: (embed dim, depths, heads)
SPECS = {
    "swin_tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
}


def _spec(name: str) -> dict:
    embed, depths, heads = SPECS[name]
    return {"embed": embed, "depths": depths, "heads": heads, "window": WINDOW}


def _build(bb: Backbone, inp, options):
    from .swin_layers import swin_backbone

    size = int(inp.shape[1])
    if size % SIZE_MULTIPLE or int(inp.shape[2]) != size:
        raise GramTFError(
            f"{bb.name} takes square inputs of a multiple of {SIZE_MULTIPLE} px (224, 448, ...), got {size} px")
    kw = bb.app_kwargs
    feats = swin_backbone(inp, kw["embed"], kw["depths"], kw["heads"], PATCH, kw["window"], gelu=gelu_choice(options))
    return CheckpointLoader(inp, feats, lambda layers, path: load_checkpoint(layers, path, kw)), feats


register_layer_module("gram_tf.models.swin_layers")
for _name in SPECS:
    register(Backbone(
        name=_name, family="Swin", default_size=224, min_size=SIZE_MULTIPLE, build=_build,
        preprocessing=dict(PRE_TORCH), source="gram_tf (Keras 2)", patch_size=SIZE_MULTIPLE,
        app_kwargs=_spec(_name),
        notes="weights: a timm or Hugging Face .safetensors/.npz file; input sizes: multiples of 224 (window 7)",
    ))


# ------------------------------------------------------------------------------ checkpoints

# the source model's classifier head (gram_tf trains its own) and buffers we recompute
_IGNORED = re.compile(r"^head\.|^head$|.*\.(relative_position_index|attn_mask)$")


def expected_tensors(spec: dict) -> dict:
    """timm's tensor names and torch shapes for this Swin (the classifier head excluded)."""
    embed, window = spec["embed"], spec["window"]
    out = {"patch_embed.proj.weight": (embed, 3, PATCH, PATCH), "patch_embed.proj.bias": (embed,),
           "patch_embed.norm.weight": (embed,), "patch_embed.norm.bias": (embed,)}
    dim = embed
    for s, (depth, heads) in enumerate(zip(spec["depths"], spec["heads"])):
        if s > 0:
            d = f"layers.{s}.downsample"
            out.update({f"{d}.norm.weight": (4 * dim,), f"{d}.norm.bias": (4 * dim,),
                        f"{d}.reduction.weight": (2 * dim, 4 * dim)})
            dim *= 2
        for b in range(depth):
            p = f"layers.{s}.blocks.{b}"
            out.update({
                f"{p}.norm1.weight": (dim,), f"{p}.norm1.bias": (dim,),
                f"{p}.attn.relative_position_bias_table": ((2 * window - 1) ** 2, heads),
                f"{p}.attn.qkv.weight": (3 * dim, dim), f"{p}.attn.qkv.bias": (3 * dim,),
                f"{p}.attn.proj.weight": (dim, dim), f"{p}.attn.proj.bias": (dim,),
                f"{p}.norm2.weight": (dim,), f"{p}.norm2.bias": (dim,),
                f"{p}.mlp.fc1.weight": (4 * dim, dim), f"{p}.mlp.fc1.bias": (4 * dim,),
                f"{p}.mlp.fc2.weight": (dim, 4 * dim), f"{p}.mlp.fc2.bias": (dim,),
            })
    out.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return out


def expected_names(spec: dict) -> list[str]:
    return list(expected_tensors(spec))


def merge_channel_order(dim: int) -> np.ndarray:
    """For each channel of our PatchMerge output ((row, column, C) order, SPACE_TO_DEPTH), the
    index of the same value in timm's concat ((column, row, C) order: x00, x10, x01, x11)."""
    return np.arange(4 * dim).reshape(2, 2, dim).transpose(1, 0, 2).reshape(-1)


# Hugging Face (`microsoft/swin-*`, SwinForImageClassification) -> timm, inside a block
_HF_BLOCK = {"layernorm_before": "norm1", "attention.output.dense": "attn.proj", "layernorm_after": "norm2",
             "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
             "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
             "attention.self.relative_position_index": "attn.relative_position_index"}


def to_timm_names(tensors: dict) -> dict:
    """Rename a Hugging Face Swin state dict to timm 1.0's names (timm names pass through).
    Hugging Face merges patches at the end of stage i, timm at the start of stage i + 1, and keeps
    query / key / value apart (fused here); the 2x2 concatenation order is the same in both."""
    if not any(k.startswith(("swin.", "embeddings.", "encoder.")) for k in tensors):
        return dict(tensors)
    out, qkv = {}, {}
    for key, value in tensors.items():
        k = re.sub(r"^swin\.", "", key)
        m = re.match(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)$", k)
        q = re.match(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$", k)
        if q:
            s_, b_, part, kind = q.groups()
            qkv.setdefault(f"layers.{s_}.blocks.{b_}.attn.qkv.{kind}", {})[part] = value
            continue
        t = re.match(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.(attention\.self\.relative_position_\w+)$", k)
        if t:
            out[f"layers.{t.group(1)}.blocks.{t.group(2)}.{_HF_BLOCK[t.group(3)]}"] = value
            continue
        if m and m.group(3) in _HF_BLOCK:
            out[f"layers.{m.group(1)}.blocks.{m.group(2)}.{_HF_BLOCK[m.group(3)]}.{m.group(4)}"] = value
            continue
        d = re.match(r"encoder\.layers\.(\d+)\.downsample\.(.+)$", k)
        if d:
            out[f"layers.{int(d.group(1)) + 1}.downsample.{d.group(2)}"] = value
            continue
        k = re.sub(r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj.", k)
        k = re.sub(r"^embeddings\.norm\.", "patch_embed.norm.", k)
        k = re.sub(r"^layernorm\.", "norm.", k)
        k = re.sub(r"^classifier\.", "head.fc.", k)
        out[k] = value
    for name, parts in qkv.items():
        out[name] = fuse_qkv(parts, name)
    return out


def load_checkpoint(layers: dict, path, spec: dict) -> None:
    """Copy a timm (or Hugging Face) Swin checkpoint into our layers (torch layouts transposed)."""
    tensors = to_timm_names(read_tensors(path))
    check_names(path, tensors, expected_names(spec), _IGNORED, "this Swin Transformer")
    assignments = []  # (layer, [arrays])

    def dense(prefix):
        return [dense_kernel(tensors[f"{prefix}.weight"]), tensors[f"{prefix}.bias"]]

    def norm(prefix, order=None):
        w, b = tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"]
        return [w, b] if order is None or w.shape != order.shape else [w[order], b[order]]

    assignments.append(("patch_embed", [conv_kernel(tensors["patch_embed.proj.weight"]), tensors["patch_embed.proj.bias"]]))
    assignments.append(("patch_embed_norm", norm("patch_embed.norm")))
    dim = spec["embed"]
    for s, depth in enumerate(spec["depths"]):
        if s > 0:
            d = f"layers.{s}.downsample"
            order = merge_channel_order(dim)
            kernel = dense_kernel(tensors[f"{d}.reduction.weight"])  # (4C, 2C), rows in timm's order
            if kernel.shape[0] == order.size:
                kernel = kernel[order]
            assignments += [(f"stage{s}_merge_norm", norm(f"{d}.norm", order)), (f"stage{s}_reduction", [kernel])]
            dim *= 2
        for b in range(depth):
            p, t = f"stage{s}_block{b}", f"layers.{s}.blocks.{b}"
            assignments += [
                (f"{p}_norm1", norm(f"{t}.norm1")), (f"{p}_qkv", dense(f"{t}.attn.qkv")),
                (f"{p}_attn", [tensors[f"{t}.attn.relative_position_bias_table"]]),
                (f"{p}_proj", dense(f"{t}.attn.proj")), (f"{p}_norm2", norm(f"{t}.norm2")),
                (f"{p}_fc1", dense(f"{t}.mlp.fc1")), (f"{p}_fc2", dense(f"{t}.mlp.fc2")),
            ]
    assignments.append(("norm", norm("norm")))
    assign(path, layers, assignments)
