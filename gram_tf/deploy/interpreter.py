"""The LiteRT interpreter (ai_edge_litert, or tflite_runtime as a fallback), from a path or bytes."""
from __future__ import annotations

from ..errors import GramTFError, one_line


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise GramTFError("no TFLite interpreter installed: pip install ai-edge-litert"
                              ) from None
    return Interpreter


def make_interpreter(model, threads=None, delegate: bool = True, **options):
    """A LiteRT interpreter, tensors allocated, for a model path or model bytes.

    `delegate=False` runs the builtin kernels without XNNPACK (weights then stay readable with
    get_tensor, for inspection).
    """
    Interpreter = interpreter_class()
    if not delegate:
        try:
            from ai_edge_litert.interpreter import OpResolverType
        except ImportError:  # tflite_runtime
            from tflite_runtime.interpreter import OpResolverType
        options["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(model, (bytes, bytearray)):
        options["model_content"] = bytes(model)
        where = "model bytes"
    else:
        from ..io_utils import require_regular_file

        require_regular_file(model, "model file")  # LiteRT would block on a named pipe, read a device
        options["model_path"] = str(model)
        where = str(model)
    try:
        interp = Interpreter(num_threads=threads, **options)
    except Exception as exc:
        raise GramTFError(f"{where}: LiteRT cannot load this model ({one_line(exc, 200)})") from None
    interp.allocate_tensors()
    return interp


def prepare_failure(blob: bytes, timeout_s: float = 300) -> "str | None":
    """None when LiteRT prepares (allocates) the model; else why not. Runs in a child process,
    because some LiteRT kernels abort the process instead of returning an error (measured:
    int16x8 models with Keras' LayerNormalization), which no Python code can catch."""
    import os
    import subprocess
    import sys
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        code = ("import sys; from gram_tf.deploy.interpreter import interpreter_class; "
                "interpreter_class()(model_path=sys.argv[1]).allocate_tensors()")
        try:
            done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return f"LiteRT did not prepare the model within {timeout_s:.0f} s"
    finally:
        os.unlink(path)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(("I0000", "W0000", "INFO:"))]
    how = "aborted" if done.returncode < 0 else f"exit code {done.returncode}"
    return f"LiteRT {how} while preparing it" + (f" ({' '.join(lines[-1].split())[:160]})" if lines else "")
