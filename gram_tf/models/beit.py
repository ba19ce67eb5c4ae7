"""BEiT backbone (timm's `beit_base_patch16_224`): registration and pretrained-checkpoint import.

A timm `.safetensors` / `.npz` file is read with numpy and mapped onto our layers by name; a
missing, unexpected or mis-shaped tensor is an error that lists the names. BEiT has no absolute
position embedding: each block has its own relative position bias table, which is resized (bicubic,
as a (2g-1, 2g-1) image per head, the three class-token rows kept) when the model's patch grid
differs from the checkpoint's.

timm's attention has a q bias and a v bias but no k bias (a zero buffer). Ours is one Dense with a
bias, set to concat(q_bias, 0, v_bias): one fused projection, like ViT's, that TF-MOT prunes and
quantizes as usual. Fine-tuning leaves the k part at zero up to weight decay: a k bias adds q.b_k to
every logit of a query row, which softmax cancels, so its gradient is zero.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import GramTFError
from .checkpoint import (CheckpointLoader, assign, check_names, conv_kernel, dense_kernel, fuse_qkv,
                         read_tensors)
from .registry import PRE_TF, Backbone, gelu_choice, register, register_layer_module

PATCH = 16
# name: (embed dim, depth, heads, layer-scale init)
SPECS = {"beit_base": (768, 12, 12, 0.1)}


def _build(bb: Backbone, inp, options):
    from .beit_layers import beit_backbone

    kw = bb.app_kwargs
    feats = beit_backbone(inp, kw["dim"], kw["depth"], kw["heads"], PATCH, gelu=gelu_choice(options),
                          init_values=kw["init_values"])
    grid = int(inp.shape[1]) // PATCH
    return CheckpointLoader(inp, feats, lambda layers, path: load_checkpoint(layers, path, kw, grid)), feats


register_layer_module("gram_tf.models.beit_layers")
for _name, (_dim, _depth, _heads, _init) in SPECS.items():
    register(Backbone(
        name=_name, family="BEiT", default_size=224, min_size=32, build=_build,
        preprocessing=dict(PRE_TF),  # timm pretrained_cfg: mean = std = 0.5, RGB
        source="gram_tf (Keras 2)", patch_size=PATCH,
        app_kwargs={"dim": _dim, "depth": _depth, "heads": _heads, "init_values": _init},
        notes="weights: a timm or Hugging Face .safetensors/.npz file; relative position bias resized to the input size",
    ))


# ------------------------------------------------------------------------------ checkpoints

# the source model's classifier head (gram_tf trains its own) and the index buffer we recompute
_IGNORED = re.compile(r"^(head\b|blocks\.\d+\.attn\.relative_position_index$)")
_BLOCK_PARTS = ("gamma_1", "gamma_2", "norm1.weight", "norm1.bias", "attn.q_bias", "attn.v_bias",
                "attn.relative_position_bias_table", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias",
                "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")


def expected_names(spec: dict) -> list[str]:
    names = ["cls_token", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(spec["depth"]):
        names += [f"blocks.{i}.{part}" for part in _BLOCK_PARTS]
    return names + ["fc_norm.weight", "fc_norm.bias"]


def expected_shapes(spec: dict, grid: int = 14) -> dict:
    """Each expected tensor's shape as timm saves it, for a checkpoint made at `grid` x `grid` patches."""
    d, h = spec["dim"], spec["heads"]
    shapes = {"cls_token": (1, 1, d), "patch_embed.proj.weight": (d, 3, PATCH, PATCH), "patch_embed.proj.bias": (d,),
              "fc_norm.weight": (d,), "fc_norm.bias": (d,)}
    block = {"attn.relative_position_bias_table": ((2 * grid - 1) ** 2 + 3, h), "attn.qkv.weight": (3 * d, d),
             "attn.proj.weight": (d, d), "mlp.fc1.weight": (4 * d, d), "mlp.fc1.bias": (4 * d,),
             "mlp.fc2.weight": (d, 4 * d)}
    for i in range(spec["depth"]):
        for part in _BLOCK_PARTS:
            shapes[f"blocks.{i}.{part}"] = block.get(part, (d,))
    return shapes


def resize_bias_table(table: np.ndarray, grid: int) -> np.ndarray:
    """Resize a BEiT relative-position table ((2g0-1)^2 + 3, heads) to `grid`: the offset part as a
    (2g0-1)^2 image per head, bicubic; the three class-token rows (at the end) are kept."""
    table = np.asarray(table)
    if table.ndim != 2:
        raise GramTFError(f"relative position bias table must be 2-D (rows, heads), got shape {table.shape}")
    side_new = 2 * grid - 1
    if table.shape[0] == side_new * side_new + 3:
        return table
    side_old = int(round(np.sqrt(table.shape[0] - 3)))
    if side_old * side_old + 3 != table.shape[0] or side_old % 2 == 0:
        raise GramTFError(f"relative position bias table has {table.shape[0]} rows, not (2g-1)^2 + 3 for a patch grid g")
    import tensorflow as tf

    img = table[:-3].reshape(1, side_old, side_old, table.shape[1]).astype(np.float32)
    resized = tf.image.resize(img, [side_new, side_new], method="bicubic").numpy()
    return np.concatenate([resized.reshape(side_new * side_new, -1), table[-3:]], axis=0).astype(table.dtype)


# Hugging Face (`microsoft/beit-*`, BeitForImageClassification) -> timm, inside a block
_HF_BLOCK = {"lambda_1": "gamma_1", "lambda_2": "gamma_2",
             "layernorm_before.weight": "norm1.weight", "layernorm_before.bias": "norm1.bias",
             "layernorm_after.weight": "norm2.weight", "layernorm_after.bias": "norm2.bias",
             "attention.output.dense.weight": "attn.proj.weight", "attention.output.dense.bias": "attn.proj.bias",
             "intermediate.dense.weight": "mlp.fc1.weight", "intermediate.dense.bias": "mlp.fc1.bias",
             "output.dense.weight": "mlp.fc2.weight", "output.dense.bias": "mlp.fc2.bias",
             "attention.attention.query.bias": "attn.q_bias", "attention.attention.value.bias": "attn.v_bias",
             "attention.attention.relative_position_bias.relative_position_bias_table":
                 "attn.relative_position_bias_table",
             "attention.attention.relative_position_bias.relative_position_index": "attn.relative_position_index"}
_HF_TOP = {"embeddings.cls_token": "cls_token", "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
           "pooler.layernorm.weight": "fc_norm.weight", "pooler.layernorm.bias": "fc_norm.bias",
           "classifier.weight": "head.weight", "classifier.bias": "head.bias"}


def to_timm_names(tensors: dict) -> dict:
    """Rename a Hugging Face BEiT state dict to timm's names (timm names pass through): separate
    query / key / value weights fused, query / value biases to q_bias / v_bias, lambda -> gamma,
    the pooler's LayerNorm -> fc_norm. (The masked-image-modelling `mask_token` is dropped.)"""
    if not any(k.startswith(("beit.", "embeddings.", "encoder.")) for k in tensors):
        return dict(tensors)
    out, qkv = {}, {}
    for key, value in tensors.items():
        k = re.sub(r"^beit\.", "", key)
        w = re.match(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.weight$", k)
        if w:
            qkv.setdefault(w.group(1), {})[w.group(2)] = value
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)$", k)
        if m and m.group(2) in _HF_BLOCK:
            out[f"blocks.{m.group(1)}.{_HF_BLOCK[m.group(2)]}"] = value
        elif k != "embeddings.mask_token":
            out[_HF_TOP.get(k, k)] = value
    for i, parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.weight"] = fuse_qkv(parts, f"blocks.{i}")
    return out


def load_checkpoint(layers: dict, path, spec: dict, grid: int) -> None:
    """Copy a timm (or Hugging Face) BEiT checkpoint into our layers (torch layouts transposed,
    tables resized)."""
    tensors = to_timm_names(read_tensors(path))
    check_names(path, tensors, expected_names(spec), _IGNORED, "this BEiT")
    assignments = []  # (layer, [arrays])

    def dense(prefix):
        return [dense_kernel(tensors[f"{prefix}.weight"]), tensors[f"{prefix}.bias"]]

    def norm(prefix):
        return [tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"]]

    assignments.append(("patch_embed", [conv_kernel(tensors["patch_embed.proj.weight"]), tensors["patch_embed.proj.bias"]]))
    assignments.append(("class_token", [tensors["cls_token"]]))
    for i in range(spec["depth"]):
        b = f"blocks.{i}"
        q_bias, v_bias = tensors[f"{b}.attn.q_bias"], tensors[f"{b}.attn.v_bias"]
        if np.shape(q_bias) != np.shape(v_bias):
            raise GramTFError(f"checkpoint {path} has mis-shaped tensors: {b}.attn.q_bias {np.shape(q_bias)} "
                              f"vs {b}.attn.v_bias {np.shape(v_bias)}")
        qkv_bias = np.concatenate([q_bias, np.zeros_like(q_bias), v_bias])
        table = tensors[f"{b}.attn.relative_position_bias_table"]
        try:
            table = resize_bias_table(table, grid)
        except GramTFError as exc:
            raise GramTFError(f"checkpoint {path}: {b}.attn.{exc}") from None
        assignments += [(f"block{i}_norm1", norm(f"{b}.norm1")),
                        (f"block{i}_qkv", [dense_kernel(tensors[f"{b}.attn.qkv.weight"]), qkv_bias]),
                        (f"block{i}_attn", [table]),
                        (f"block{i}_proj", dense(f"{b}.attn.proj")),
                        (f"block{i}_gamma1", [tensors[f"{b}.gamma_1"]]),
                        (f"block{i}_norm2", norm(f"{b}.norm2")),
                        (f"block{i}_fc1", dense(f"{b}.mlp.fc1")),
                        (f"block{i}_fc2", dense(f"{b}.mlp.fc2")),
                        (f"block{i}_gamma2", [tensors[f"{b}.gamma_2"]])]
    assignments.append(("fc_norm", norm("fc_norm")))
    assign(path, layers, assignments)
