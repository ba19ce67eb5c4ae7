"""Property tests (issue 36): the benchmark log parsers and the .tflite metadata readers, fed random and
mutated input, either succeed or raise GramTFError with one line of bounded length; never another
exception, never a hang. Small budget by default; GRAM_TF_FUZZ_EXAMPLES=2000 for a longer search."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gram_tf.bench.logs import parse_log
from gram_tf.deploy.inspect import describe
from gram_tf.deploy.metadata import list_metadata_names, read_metadata
from gram_tf.deploy.standard_metadata import (classifier_card, package_model, read_packed_files,
                                              read_standard_metadata)
from gram_tf.errors import GramTFError

from .conftest import deadline

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = int(os.environ.get("GRAM_TF_FUZZ_EXAMPLES", "40"))
MAX_MESSAGE = 400
FUZZ = settings(max_examples=EXAMPLES, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])




def _clean(fn, *args):
    """Run fn: success, or a GramTFError of one line of at most MAX_MESSAGE characters."""
    with deadline(20):
        try:
            return fn(*args)
        except GramTFError as exc:
            message = str(exc)
            assert "\n" not in message and "\r" not in message, message
            assert 0 < len(message) <= MAX_MESSAGE, message
            return None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------------ benchmark logs
CPP = (FIXTURES / "benchmark_model_cpp.log").read_text()
PY = """2025-01-01 10:00:00,000 INFO benchmark_litert_model: Model:           /tmp/m.tflite
2025-01-01 10:00:00,000 INFO benchmark_litert_model: Model size:      {size} MB
2025-01-01 10:00:00,000 INFO benchmark_litert_model: Num threads:     {threads}
 BENCHMARK RESULTS
Model initialization:  {a} ms
Warmup (first):        {b} ms
Inference (avg):       {c} ms ({runs} runs)
Inference (min):       {d} ms
Inference (max):       {e} ms
Inference (median):    {f} ms
Inference (std):       {g} ms
"""
CPP_TEMPLATE = ("INFO: Num threads: [{threads}]\nINFO: Graph: [/tmp/m.tflite]\n"
                "INFO: The input model file size (MB): {size}\n"
                "INFO: count={runs} first={a} curr={b} min={d} max={e} avg={c} std={g} p5={a} median={f} p95={e}\n"
                "INFO: Inference timings in us: Init: {a}, First inference: {b}, Warmup (avg): {c}, Inference (avg): {c}\n")

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["1.2.3", "...", "nan", "-inf", "0", "-0", "1e400", "0x10", "1_000", "", "9" * 5000, "١٢"]),
    st.text(alphabet="0123456789.-+eE", max_size=12),
)
log_fields = st.fixed_dictionaries({k: numbers for k in ("size", "threads", "a", "b", "c", "d", "e", "f", "g", "runs")})


def _parse(workdir: Path, data: bytes):
    path = workdir / "bench.log"
    path.write_bytes(data)
    return _clean(parse_log, path)


@FUZZ
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_random_text_is_a_log_or_one_line(workdir, data):
    _parse(workdir, data)


@FUZZ
@given(st.sampled_from([PY, CPP_TEMPLATE]), log_fields)
def test_random_numbers_in_the_log_formats(workdir, template, fields):
    parsed = _parse(workdir, template.format(**fields).encode("utf-8", "surrogatepass"))
    if parsed is not None:  # whatever got through is a figure a row can hold
        assert parsed["latency_ms_mean"] > 0 and (parsed["runs"] is None or parsed["runs"] >= 1)
        for key, value in parsed.items():
            if key.endswith("_ms") or key.startswith("latency_"):
                assert value is None or (value >= 0 and value != float("inf")), (key, value)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30)
LATENCY_KEYS = ("init_ms", "warmup_first_ms", "avg_ms", "min_ms", "max_ms", "median_ms", "std_ms", "num_runs")


@FUZZ
@given(st.one_of(
    json_values.filter(lambda v: isinstance(v, dict)),
    st.fixed_dictionaries({"model": json_values, "model_size_mb": json_values, "num_threads": json_values,
                           "latency": st.fixed_dictionaries({k: json_values for k in LATENCY_KEYS})}),
    st.fixed_dictionaries({"latency": st.fixed_dictionaries({k: st.floats() | st.integers() for k in LATENCY_KEYS})}),
))
def test_random_result_json(workdir, data):
    _parse(workdir, json.dumps(data).encode())


# -------------------------------------------------------------------------------- .tflite readers
@pytest.fixture(scope="module")
def model_bytes():
    """The old-format fixture with the standard metadata and a packed labels.txt added: every reader
    has something to find."""
    base = (FIXTURES / "old_format" / "old_format_int8.tflite").read_bytes()
    card = classifier_card(name="m", description="d", version="1", input_size=16, mean=[127.5] * 3,
                           std=[127.5] * 3, value_min=[0], value_max=[255], input_description="pixels",
                           labels=["gram_negative", "gram_positive"])
    blob = package_model(base, card, ["gram_negative", "gram_positive"])
    assert read_packed_files(blob) and read_standard_metadata(blob) and read_metadata(blob)
    return blob


READERS = (read_metadata, list_metadata_names, read_standard_metadata, read_packed_files)


def _read_all(workdir: Path, data: bytes):
    for reader in READERS:
        _clean(reader, data)
    path = workdir / "m.tflite"
    path.write_bytes(data)
    for reader in READERS + (describe,):
        _clean(reader, path)


@FUZZ
@given(st.binary(max_size=512) | st.binary(max_size=64).map(lambda b: b[:4] + b"TFL3" + b[4:]))
def test_random_bytes(workdir, data):
    _read_all(workdir, data)


edits = st.lists(st.tuples(st.sampled_from(["start", "tail", "anywhere"]), st.integers(0, 1 << 20), st.integers(0, 255)),
                 min_size=1, max_size=8)


@FUZZ
@given(edits, st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_mutated_model(workdir, model_bytes, changes, cut):
    data = bytearray(model_bytes)
    n = len(data)
    for region, at, value in changes:  # root table and vtables / the packed zip at the end / any byte
        data[{"start": at % 256, "tail": n - 1 - at % 512, "anywhere": at % n}[region]] = value
    if cut is not None:
        data = data[:cut % n]
    _read_all(workdir, bytes(data))


def test_packed_files_that_are_encrypted_or_oversized_read_as_none(model_bytes):
    """Found by fuzzing: a zip member flagged as encrypted raised RuntimeError from zipfile. A member
    stated larger than the model (only a compressed one can be) is not inflated either."""
    import zipfile

    start = model_bytes.rfind(b"PK\x03\x04")
    encrypted = bytearray(model_bytes)
    for header, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        at = encrypted.rfind(header)
        encrypted[at + flag_at] |= 1
    assert read_packed_files(bytes(encrypted)) == {}
    import io

    bomb = io.BytesIO()
    bomb.write(model_bytes[:start])
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("labels.txt", b"a\n" * (4 << 20))
    assert len(bomb.getvalue()) < 100_000 and read_packed_files(bomb.getvalue()) == {}
