"""What a `.tflite` holds, for `gram-tf inspect` / `gram-tf predict --info`: tensors, quantization,
preprocessing, labels and both metadata entries (gram_tf's JSON and the standard TFLITE_METADATA), read
with LiteRT and the pure-Python readers (no TensorFlow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import GramTFError, one_line
from ..io_utils import require_regular_file, sha256_file
from .interpreter import make_interpreter
from .imaging import IN_GRAPH
from .metadata import METADATA_NAME, list_metadata_names, read_metadata
from .standard_metadata import STANDARD_NAME, read_packed_files, read_standard_metadata


def _tensor(detail: dict) -> dict:
    q = detail.get("quantization_parameters") or {}
    scales = [float(s) for s in q.get("scales", [])]
    return {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name,
            "shape": [int(d) for d in detail["shape"]],
            "quantization": ({"scale": scales[0], "zero_point": int(q["zero_points"][0])} if len(scales) == 1 else
                             {"per_channel_scales": len(scales)} if scales else None)}


def describe(model_path) -> dict:
    """Everything `inspect` prints, as a dict (``--json`` prints it as it is)."""
    path = Path(model_path)
    require_regular_file(path, "model file")  # a named pipe or a device is never opened
    names = list_metadata_names(path)  # also rejects a file that is not a TFLite flatbuffer
    gram = read_metadata(path)
    standard = read_standard_metadata(path)
    packed = read_packed_files(path)
    try:
        interp = make_interpreter(str(path), threads=1, delegate=False)
    except (ValueError, RuntimeError) as exc:
        raise GramTFError(f"{path}: LiteRT cannot load the model ({one_line(exc, 200)}); re-export it") from None
    pre = (gram or {}).get("preprocessing")
    return {
        "file": str(path), "size_bytes": path.stat().st_size, "sha256": sha256_file(path),
        "gram_tf_version": (gram or {}).get("gram_tf_version"),
        "inputs": [_tensor(d) for d in interp.get_input_details()],
        "outputs": [_tensor(d) for d in interp.get_output_details()],
        "takes": None if pre is None else ("RGB pixels 0-255 (normalized in the graph)" if pre.get(IN_GRAPH)
                                           else "normalized values: (pixel - mean) / std, done by the caller"),
        "labels": (gram or {}).get("labels"),
        "metadata_entries": names,
        METADATA_NAME: gram,
        STANDARD_NAME: standard,
        "packed_files": {name: data.decode("utf-8", errors="replace") for name, data in packed.items()},
    }


def format_description(info: dict) -> str:
    """The human-readable view: a few key lines, then both metadata entries as indented JSON."""
    def tensors(items):
        return "; ".join(f"{t['name']} {t['dtype']} {t['shape']}"
                         + (f" scale {t['quantization']['scale']:.6g} zero point {t['quantization']['zero_point']}"
                            if t["quantization"] and "scale" in t["quantization"] else "") for t in items)

    lines = [f"file:      {info['file']} ({info['size_bytes']:,} bytes)",
             f"sha256:    {info['sha256']}",
             f"gram_tf:   {info['gram_tf_version'] or 'not recorded'}",
             f"input:     {tensors(info['inputs'])}",
             f"output:    {tensors(info['outputs'])}",
             f"takes:     {info['takes'] or 'unknown (no gram_tf metadata)'}",
             f"labels:    {', '.join(map(str, info['labels'])) if info['labels'] else 'none recorded'}",
             f"metadata:  {', '.join(info['metadata_entries'])}",
             f"packed:    {', '.join(info['packed_files']) or 'none'}"]
    for key in (METADATA_NAME, STANDARD_NAME):
        lines.append(f"\n{key} entry:" if info[key] is not None else f"\n{key} entry: absent")
        if info[key] is not None:
            lines.append(json.dumps(info[key], indent=2))
    return "\n".join(lines)
