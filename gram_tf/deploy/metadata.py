"""gram_tf metadata (labels, input size, preprocessing) stored inside a ``.tflite`` flatbuffer.

The metadata is a JSON object kept in the model's ``Model.metadata`` list (an entry named
``gram_tf`` pointing at a buffer that holds ``json.dumps(meta).encode()``), so one ``.tflite``
file is all a deploy device needs. A ``<model>.tflite.json`` sidecar file is the fallback.

Both directions are pure Python (standard library only): reading runs on the deploy device,
which has no TensorFlow, and writing never re-serialises the model, so it takes milliseconds
even for large models.

TFLite schema facts used here (tensorflow/compiler/mlir/lite/schema/schema.fbs, file id "TFL3"):

* ``Model``: 0 version:uint, 1 operator_codes, 2 subgraphs, 3 description:string,
  4 buffers:[Buffer], 5 metadata_buffer:[int], 6 metadata:[Metadata], 7 signature_defs,
  8 external_buffer_groups, 9 external_buffers (fields 1-9 are all offsets).
* ``Buffer``: 0 data:[ubyte] (force_align 16), 1 offset:ulong, 2 size:ulong. When ``offset > 1``
  the bytes live at ``file[offset:offset + size]`` (large-model layout, past the flatbuffer).
* ``Metadata``: 0 name:string, 1 buffer:uint (index into ``Model.buffers``).
* ``SubGraph``: 0 tensors, 3 operators. ``Tensor``: 2 buffer:uint.
  ``Operator``: 9 large_custom_options_offset:ulong (absolute file offset, valid if > 1).

How :func:`embed_metadata` edits the file: flatbuffer offsets are relative and point forward,
so a new root ``Model`` table is *inserted right after the 8-byte header*, followed by a new
``buffers`` vector, a new ``metadata`` vector, the new ``Metadata`` table and the new ``Buffer``
holding the JSON. The new root re-points every other field at the untouched original objects,
which simply move up by the size of the inserted block. That size is a multiple of 64 bytes, so
the 16-byte alignment of all tensor data is preserved; the only absolute file offsets in the
schema (``Buffer.offset`` and ``Operator.large_custom_options_offset``) are patched by the same
amount. The old root table stays in the file as a few unreferenced bytes.
"""
from __future__ import annotations

import io
import json
import mmap
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ..errors import GramTFError
from ..io_utils import require_regular_file

METADATA_NAME = "gram_tf"
MANIFEST_NAME = "manifest.json"  # an artifacts folder's list of artifacts (sha256, sizes, checks)
METADATA_FORMAT = "gram_tf/1"
TFLITE_IDENTIFIER = b"TFL3"

# Model table field ids (see module docstring).
_M_VERSION, _M_BUFFERS, _M_METADATA_BUFFER, _M_METADATA, _M_SUBGRAPHS = 0, 4, 5, 6, 2
_M_KNOWN_FIELDS = 10  # ids 0..9; 0 is a scalar, 1..9 are offsets
_SHIFT_ALIGN = 64  # inserted block size multiple: keeps every 16-byte alignment intact

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


class _Corrupt(Exception):
    """Internal: a flatbuffer offset points outside the file."""


class _FlatBuffer:
    """Minimal bounds-checked flatbuffer table reader over bytes / mmap."""

    def __init__(self, buf):
        self.buf = buf
        self.size = len(buf)

    def _unpack(self, st: struct.Struct, pos: int):
        if pos < 0 or pos + st.size > self.size:
            raise _Corrupt(f"offset {pos} out of range")
        return st.unpack_from(self.buf, pos)[0]

    def u16(self, pos):
        return self._unpack(_U16, pos)

    def u32(self, pos):
        return self._unpack(_U32, pos)

    def i32(self, pos):
        return self._unpack(_I32, pos)

    def u64(self, pos):
        return self._unpack(_U64, pos)

    def root(self) -> int:
        return self.u32(0)

    def vtable(self, table: int) -> tuple[int, int]:
        """(vtable position, number of field slots) of the table at ``table``."""
        vt = table - self.i32(table)
        vt_size = self.u16(vt)
        if vt_size < 4 or vt_size % 2:
            raise _Corrupt(f"bad vtable at {vt}")
        return vt, (vt_size - 4) // 2

    def field(self, table: int, field_id: int) -> int | None:
        """Absolute position of a table field, or None when it is absent (default value)."""
        vt, n = self.vtable(table)
        if field_id >= n:
            return None
        off = self.u16(vt + 4 + 2 * field_id)
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def ref(self, table: int, field_id: int) -> int | None:
        """Target of an offset field (table/vector/string), or None when absent."""
        pos = self.field(table, field_id)
        return None if pos is None else self.deref(pos)

    def scalar(self, table: int, field_id: int, reader, default=0):
        pos = self.field(table, field_id)
        return default if pos is None else reader(pos)

    def vector(self, table: int, field_id: int, item_size: int) -> tuple[int, int] | None:
        """(position of the first item, item count) of a vector field, bounds-checked; None when absent."""
        vec = self.ref(table, field_id)
        if vec is None:
            return None
        n = self.u32(vec)
        if vec + 4 + item_size * n > self.size:
            raise _Corrupt(f"vector at {vec} overruns the file")
        return vec + 4, n

    def vector_of_tables(self, table: int, field_id: int) -> list[int]:
        found = self.vector(table, field_id, 4)
        if found is None:
            return []
        start, n = found
        return [self.deref(start + 4 * i) for i in range(n)]

    def bytes_vector(self, table: int, field_id: int) -> bytes | None:
        found = self.vector(table, field_id, 1)
        if found is None:
            return None
        start, n = found
        return bytes(self.buf[start: start + n])

    def string(self, table: int, field_id: int) -> str | None:
        raw = self.bytes_vector(table, field_id)
        return None if raw is None else raw.decode("utf-8", errors="replace")

    def buffer_data(self, buffer_table: int) -> bytes:
        """Contents of a ``Buffer`` table, inline or in the large-model layout."""
        offset = self.scalar(buffer_table, 1, self.u64)
        if offset > 1:
            size = self.scalar(buffer_table, 2, self.u64)
            if offset + size > self.size:
                raise _Corrupt(f"buffer data at {offset}+{size} overruns the file")
            return bytes(self.buf[offset: offset + size])
        return self.bytes_vector(buffer_table, 0) or b""


def _check_identifier(buf, what: str) -> None:
    if len(buf) < 8 or bytes(buf[4:8]) != TFLITE_IDENTIFIER:
        raise GramTFError(
            f"{what}: not a TFLite model (no 'TFL3' flatbuffer identifier); "
            "pass a .tflite file produced by the converter")


def _metadata_entries(fb: _FlatBuffer, root: int) -> list[tuple[int, str | None, int]]:
    """[(metadata table position, name, buffer index)] in file order."""
    entries = []
    for table in fb.vector_of_tables(root, _M_METADATA):
        name = fb.string(table, 0)
        index = fb.scalar(table, 1, fb.u32)
        entries.append((table, name, index))
    return entries


# --------------------------------------------------------------------------------------- read
def _read_from_buffer(buf, what: str, name: str) -> dict | None:
    _check_identifier(buf, what)
    fb = _FlatBuffer(buf)
    try:
        root = fb.root()
        entries = _metadata_entries(fb, root)
        match = [index for _, entry_name, index in entries if entry_name == name]
        if not match:
            return None
        buffers = fb.vector_of_tables(root, _M_BUFFERS)
        index = match[-1]
        if index >= len(buffers):
            raise _Corrupt(f"metadata {name!r} points at buffer {index} of {len(buffers)}")
        raw = fb.buffer_data(buffers[index])
    except (_Corrupt, struct.error) as exc:
        raise GramTFError(
            f"{what}: corrupt TFLite flatbuffer ({exc}); re-export the model") from None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise GramTFError(
            f"{what}: the embedded {name!r} metadata is not valid JSON ({exc}); "
            "re-embed it with gram_tf.deploy.metadata.embed_metadata") from None
    if not isinstance(meta, dict):
        raise GramTFError(
            f"{what}: the embedded {name!r} metadata is a {type(meta).__name__}, "
            "not a JSON object; re-embed it with gram_tf.deploy.metadata.embed_metadata")
    return meta


def _with_model_buffer(src, fn):
    """Call ``fn(buffer, description)`` on model bytes or on a read-only mmap of a file."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return fn(memoryview(src).cast("B"), "<tflite bytes>")
    path = Path(src)
    require_regular_file(path, "model file")  # before open: a named pipe would block it
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < 8:
                _check_identifier(b"", str(path))
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return fn(mm, str(path))
    except FileNotFoundError:
        raise GramTFError(f"{path}: model file not found; check the path") from None
    except IsADirectoryError:
        raise GramTFError(f"{path}: is a folder, not a .tflite file; pass the model file") from None
    except PermissionError:
        raise GramTFError(f"{path}: permission denied; make the model file readable") from None


def read_metadata(tflite_path_or_bytes, name: str = METADATA_NAME) -> dict | None:
    """The JSON metadata dict embedded under ``name``, or None when the model has none.

    Accepts a path (str / os.PathLike) or the model bytes. Raises GramTFError when the file is
    missing, not a TFLite flatbuffer, or corrupt.
    """
    return _with_model_buffer(tflite_path_or_bytes,
                              lambda buf, what: _read_from_buffer(buf, what, name))


def list_metadata_names(tflite_path_or_bytes) -> list[str]:
    """Names of all Model.metadata entries, e.g. ['min_runtime_version', ..., 'gram_tf']."""
    def names(buf, what):
        _check_identifier(buf, what)
        fb = _FlatBuffer(buf)
        try:
            return [n for _, n, _ in _metadata_entries(fb, fb.root()) if n is not None]
        except (_Corrupt, struct.error) as exc:
            raise GramTFError(
                f"{what}: corrupt TFLite flatbuffer ({exc}); re-export the model") from None

    return _with_model_buffer(tflite_path_or_bytes, names)


# -------------------------------------------------------------------------------------- write
class _Block:
    """Bytes to be inserted after the 8-byte header; positions are absolute in the new file
    (block byte i sits at 8 + i). Offsets to the original objects are resolved once the block
    size (= the shift applied to the original objects) is known."""

    BASE = 8

    def __init__(self):
        self.data = bytearray()
        self.fixups: list[tuple[int, int, bool]] = []  # (slot pos, target, target_is_old)

    @property
    def pos(self) -> int:
        return self.BASE + len(self.data)

    def align(self, alignment: int, extra: int = 0) -> None:
        """Pad so that ``pos + extra`` is a multiple of ``alignment``."""
        self.data += b"\0" * ((-(self.pos + extra)) % alignment)

    def put(self, st: struct.Struct, value) -> int:
        at = self.pos
        self.data += st.pack(value)
        return at

    def offset_slot(self, target: int, target_is_old: bool) -> int:
        at = self.put(_U32, 0)
        self.fixups.append((at, target, target_is_old))
        return at

    def table(self, fields: list[tuple[int, str, Any]]) -> int:
        """Write a vtable + table with 4-byte fields [(field id, 'u32'|'old'|'new', value)];
        returns the table position. 'old'/'new' are offsets to original/new objects."""
        n = max((fid for fid, _, _ in fields), default=-1) + 1
        layout = sorted(fields)
        slot = {fid: 4 + 4 * i for i, (fid, _, _) in enumerate(layout)}
        self.align(2)
        vt = self.put(_U16, 4 + 2 * n)
        self.put(_U16, 4 + 4 * len(layout))
        for fid in range(n):
            self.put(_U16, slot.get(fid, 0))
        self.align(4)
        table = self.put(_I32, 0)
        struct.pack_into("<i", self.data, table - self.BASE, table - vt)
        for _, kind, value in layout:
            if kind == "u32":
                self.put(_U32, value)
            else:
                self.offset_slot(value, kind == "old")
        return table

    def vector_of_offsets(self, targets: list[tuple[int, bool]]) -> int:
        self.align(4)
        at = self.put(_U32, len(targets))
        for target, is_old in targets:
            self.offset_slot(target, is_old)
        return at

    def byte_vector(self, payload: bytes, alignment: int = 4, nul: bool = False) -> int:
        self.align(max(alignment, 4), extra=4)  # the bytes after the length are aligned
        at = self.put(_U32, len(payload))
        self.data += payload + (b"\0" if nul else b"")
        return at

    def finish(self) -> tuple[bytearray, int]:
        """Pad to the shift alignment, resolve offsets; returns (block bytes, shift)."""
        self.data += b"\0" * ((-len(self.data)) % _SHIFT_ALIGN)
        shift = len(self.data)
        for at, target, is_old in self.fixups:
            dest = target + shift if is_old else target
            rel = dest - at
            if rel <= 0:  # flatbuffer offsets must point forward
                raise AssertionError(f"backward offset {at}->{dest}")
            struct.pack_into("<I", self.data, at - self.BASE, rel)
        return self.data, shift


def _buffer_indices_in_use(fb: _FlatBuffer, root: int) -> set[int]:
    """Buffer indices referenced by tensors and by the deprecated metadata_buffer list."""
    used = {0}
    for subgraph in fb.vector_of_tables(root, _M_SUBGRAPHS):
        for tensor in fb.vector_of_tables(subgraph, 0):
            used.add(fb.scalar(tensor, 2, fb.u32))
    vec = fb.ref(root, _M_METADATA_BUFFER)
    if vec is not None:
        used.update(fb.i32(vec + 4 + 4 * i) for i in range(fb.u32(vec)))
    return used


def _patch_absolute_offsets(out: bytearray, fb: _FlatBuffer, root: int, shift: int) -> None:
    """Add ``shift`` to the absolute file offsets of the large-model layout (valid if > 1)."""
    done: set[int] = set()

    def bump(old_table: int, field_id: int) -> None:
        pos = fb.field(old_table, field_id)  # the original objects move by ``shift`` as a whole
        if pos is not None and pos not in done and fb.u64(pos) > 1:
            done.add(pos)
            _U64.pack_into(out, pos + shift, fb.u64(pos) + shift)

    for buffer in fb.vector_of_tables(root, _M_BUFFERS):
        bump(buffer, 1)
    for subgraph in fb.vector_of_tables(root, _M_SUBGRAPHS):
        for operator in fb.vector_of_tables(subgraph, 3):
            bump(operator, 9)


def embed_metadata(tflite_bytes: bytes, meta: dict, name: str = METADATA_NAME) -> bytes:
    """Return a copy of the model with ``meta`` (JSON) stored as Model.metadata entry ``name``.

    An existing entry with the same name is replaced. The model itself (graph, weights,
    signatures, other metadata) is byte-for-byte unchanged, only moved; see the module
    docstring. Pure Python, no TensorFlow; takes milliseconds for a 15 MB model.
    """
    if not isinstance(meta, dict):
        raise GramTFError(f"metadata {name!r} must be a dict, got {type(meta).__name__}")
    try:
        payload = json.dumps(meta).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise GramTFError(
            f"metadata {name!r} is not JSON-serialisable ({exc}); "
            "use only str, int, float, bool, None, list and dict values") from None
    return embed_payload(tflite_bytes, payload, name)


def embed_payload(tflite_bytes: bytes, payload: bytes, name: str) -> bytes:
    """Return a copy of the model with ``payload`` stored as Model.metadata entry ``name`` (an entry of
    that name is replaced). Files packed after the flatbuffer (:func:`pack_files`) are packed again
    after the new one, so their zip stays at the end where the readers look for it."""
    if not name:
        raise GramTFError("metadata name must be a non-empty string")
    buf, packed = split_packed(bytes(tflite_bytes))
    _check_identifier(buf, "<tflite bytes>")
    fb = _FlatBuffer(buf)
    try:
        out = _embed(fb, buf, payload, name)
    except (_Corrupt, struct.error) as exc:
        raise GramTFError(
            f"<tflite bytes>: corrupt TFLite flatbuffer ({exc}); re-export the model") from None
    return pack_files(out, packed) if packed else out


def pack_files(model: bytes, files: dict) -> bytes:
    """``model`` with ``files`` ({name: bytes}) appended as a zip, stored uncompressed (MediaPipe's reader
    refuses compressed entries), as the TFLite metadata schema packs associated files. Files packed
    earlier are dropped first, never stacked."""
    core, _ = split_packed(model)
    out = io.BytesIO()
    out.write(core)
    with zipfile.ZipFile(out, "a") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, data)
    return out.getvalue()


def split_packed(model: bytes) -> tuple[bytes, dict]:
    """(the flatbuffer alone, {name: bytes} of the files packed after it); none -> (model, {})."""
    if b"PK\x05\x06" not in model[-(1 << 16) - 22:]:  # no zip end record: nothing packed
        return model, {}
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > len(model):  # packed files are stored: never a zip bomb
                return model, {}
            # header offsets are absolute: zipfile corrects them for the model bytes before the zip
            start = min((i.header_offset for i in infos), default=0)
            files = {i.filename: zf.read(i) for i in infos}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError,
            RuntimeError, zlib.error):  # RuntimeError: an "encrypted" member
        return model, {}
    if start < 8:
        return model, {}
    return model[:start], files


def _embed(fb: _FlatBuffer, buf: bytes, payload: bytes, name: str) -> bytes:
    root = fb.root()
    vt, n_fields = fb.vtable(root)
    present = [fid for fid in range(n_fields) if fb.field(root, fid) is not None]
    unknown = [fid for fid in present if fid >= _M_KNOWN_FIELDS]
    if unknown:
        raise GramTFError(
            f"<tflite bytes>: Model has fields {unknown} unknown to gram_tf (newer TFLite "
            "schema); update gram_tf.tflite_meta or write the metadata as a sidecar .json")
    buffers = fb.vector_of_tables(root, _M_BUFFERS)
    if not buffers:
        raise GramTFError("<tflite bytes>: the model has no buffers table; "
                          "pass the output of tf.lite.TFLiteConverter")
    entries = _metadata_entries(fb, root)
    kept = [table for table, entry_name, _ in entries if entry_name != name]
    kept_indices = {index for _, entry_name, index in entries if entry_name != name}
    replaced = [index for _, entry_name, index in entries if entry_name == name]

    # Reuse the replaced entry's buffer slot when nothing else refers to it.
    new_index = len(buffers)
    if replaced:
        candidate = replaced[-1]
        if (0 < candidate < len(buffers) and candidate not in kept_indices
                and candidate not in _buffer_indices_in_use(fb, root)):
            new_index = candidate

    block = _Block()
    # Build children after their parents: all offsets must point forward. The positions of
    # the new objects are not known yet, so lay out in two passes: first measure with dummy
    # targets, then write for real (the layout does not depend on the target values).
    def layout(targets: dict[str, int]) -> dict[str, int]:
        block.__init__()
        placed = {}
        root_fields = []
        for fid in present:
            if fid == _M_VERSION:
                root_fields.append((fid, "u32", fb.u32(fb.field(root, fid))))
            elif fid not in (_M_BUFFERS, _M_METADATA):
                root_fields.append((fid, "old", fb.ref(root, fid)))
        root_fields.append((_M_BUFFERS, "new", targets["buffers"]))
        root_fields.append((_M_METADATA, "new", targets["metadata"]))
        placed["root"] = block.table(root_fields)
        buffer_refs = [(b, True) for b in buffers]
        if new_index == len(buffers):
            buffer_refs.append((targets["buffer"], False))
        else:
            buffer_refs[new_index] = (targets["buffer"], False)
        placed["buffers"] = block.vector_of_offsets(buffer_refs)
        placed["metadata"] = block.vector_of_offsets(
            [(t, True) for t in kept] + [(targets["entry"], False)])
        placed["entry"] = block.table([(0, "new", targets["name"]), (1, "u32", new_index)])
        placed["name"] = block.byte_vector(name.encode("utf-8"), nul=True)
        placed["buffer"] = block.table([(0, "new", targets["data"])])
        placed["data"] = block.byte_vector(payload, alignment=16)
        return placed

    dummy = {k: 1 << 31 for k in ("buffers", "metadata", "entry", "name", "buffer", "data")}
    placed = layout(dummy)
    placed2 = layout(placed)
    assert placed2 == placed
    data, shift = block.finish()

    out = bytearray(len(buf) + shift)
    _U32.pack_into(out, 0, placed["root"])
    out[4:8] = TFLITE_IDENTIFIER
    out[8: 8 + shift] = data
    out[8 + shift:] = buf[8:]
    _patch_absolute_offsets(out, fb, root, shift)
    return bytes(out)


# ------------------------------------------------------------------------------------ sidecar
def sidecar_path(model_path) -> Path:
    """``model.tflite`` -> ``model.tflite.json`` (the fallback metadata file)."""
    return Path(str(model_path) + ".json")


def write_sidecar(model_path, meta: dict) -> Path:
    """Write ``meta`` as the sidecar JSON next to ``model_path``; returns its path."""
    path = sidecar_path(model_path)
    try:
        path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except (TypeError, ValueError) as exc:
        raise GramTFError(f"{path}: metadata is not JSON-serialisable ({exc})") from None
    except OSError as exc:
        raise GramTFError(f"{path}: cannot write sidecar ({exc.strerror}); "
                          "check the folder is writable") from None
    return path


def read_sidecar(model_path) -> dict | None:
    """The sidecar metadata dict for ``model_path``, or None when there is no sidecar."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GramTFError(f"{path}: unreadable metadata sidecar ({exc}); "
                          "fix or delete it") from None
    if not isinstance(meta, dict):
        raise GramTFError(f"{path}: metadata sidecar must hold a JSON object; fix or delete it")
    return meta
