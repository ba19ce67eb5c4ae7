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
        options["model_path"] = str(model)
        where = str(model)
    try:
        interp = Interpreter(num_threads=threads, **options)
    except Exception as exc:
        raise GramTFError(f"{where}: LiteRT cannot load this model ({one_line(exc, 200)})") from None
    interp.allocate_tensors()
    return interp
