"""What a `.keras` file's config may name, checked before tf_keras sees it.

tf_keras resolves a serialized object by its `module` and `class_name`, and imports that module when
the class is not a known one: a model file can make any installed module run its top level (case B7
of the hardening round: `{"module": "this", ...}` printed the Zen of Python before the clean error).
Keras' safe mode stops Lambda layers only. So every object in the config is checked against an
allowlist built from the registries, reading the JSON alone, and nothing is imported on a model file's
say-so:

- tf_keras' own classes (module `keras`, `keras.*` or `tf_keras.*`: code of the installed tf_keras),
  except `Lambda` and `__lambda__` (code), `function` only for tf_keras.activations by name, and
  `TFOpLambda` only for the TensorFlow math ops below (it calls any exported TensorFlow symbol,
  `io.write_file` included);
- gram_tf's own layers (the CUSTOM_OBJECTS of the layer modules the registry lists);
- TF-MOT's wrappers (pruning, quantization), which gram_tf saves around its layers.
"""
from __future__ import annotations

from ..errors import GramTFError
from .registry import layer_modules

_KERAS_MODULES = ("keras", "keras.", "tf_keras.")
_CODE_CLASSES = {"Lambda", "__lambda__"}
_TFMOT_MODULE = "tensorflow_model_optimization."
_TFMOT_CLASSES = {"PruneLowMagnitude", "QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer", "QuantizeAnnotate",
                  "QuantizeAwareActivation", "Default8BitQuantizeConfig", "NoOpQuantizeConfig",
                  "Default8BitOutputQuantizeConfig", "MovingAverageQuantizer", "LastValueQuantizer",
                  "AllValuesQuantizer", "NoPrune"}
# TFOpLambda functions: TensorFlow math on tensors, nothing that touches files, processes or the network
_OP_PREFIXES = ("__operators__.", "math.", "nn.", "linalg.")
_OPS = {"reshape", "transpose", "concat", "cast", "identity", "expand_dims", "squeeze", "stack", "split", "matmul",
        "einsum", "clip_by_value", "compat.v1.transpose", "image.resize", "pad", "shape", "tile", "gather",
        "broadcast_to", "reduce_mean", "reduce_sum", "reduce_max", "where", "maximum", "minimum", "sigmoid",
        "tanh", "exp", "sqrt", "rsqrt", "abs", "sign", "square", "pow", "erf", "ones_like", "zeros_like"}
MAX_DEPTH = 200  # a config nested deeper is not a model (and would exhaust the recursion limit)


def _custom_classes() -> dict[str, set]:
    """{module: class names} of gram_tf's layers, from the layer modules the registry lists."""
    import importlib

    out: dict[str, set] = {}
    for module in layer_modules():
        out[module] = set(importlib.import_module(module).CUSTOM_OBJECTS)
    return out


def _activations() -> set:
    import tf_keras

    return {n for n in dir(tf_keras.activations) if not n.startswith("_")}


def refusal(node: dict, custom: dict, activations: set) -> str | None:
    """Why the serialized object `node` may not be loaded, or None when it may."""
    cls, module = node.get("class_name"), node.get("module")
    registered = node.get("registered_name")
    if not isinstance(cls, str) or not (module is None or isinstance(module, str)):
        return "a class or module that is not a name"
    if cls in _CODE_CLASSES:
        return f"class {cls} (code)"
    if module == "builtins":
        return f"class {cls} from module builtins"
    if module in custom:
        if cls in custom[module] and registered in (None, cls, f"gram_tf>{cls}"):
            return None
        return f"class {cls} (registered as {registered}) from gram_tf module {module}, which does not define it"
    if module.startswith(_TFMOT_MODULE):
        return None if cls in _TFMOT_CLASSES else f"class {cls} from module {module}"
    # no module: tf_keras looks the name up in its own objects and the custom objects (no import)
    if module is None or module == _KERAS_MODULES[0] or module.startswith(_KERAS_MODULES[1:]):
        if cls == "function":
            name = node.get("config")
            return None if isinstance(name, str) and name in activations else f"function {name!r} from {module}"
        if cls == "TFOpLambda":
            fn = (node.get("config") or {}).get("function") if isinstance(node.get("config"), dict) else None
            if isinstance(fn, str) and (fn.startswith(_OP_PREFIXES) or fn in _OPS):
                return None
            return f"TFOpLambda calling {fn!r} (only TensorFlow math ops are loaded)"
        if registered not in (None, cls) and not (isinstance(registered, str) and registered.endswith(f">{cls}")):
            return f"class {cls} registered as {registered!r}"
        return None
    return f"class {cls} from module {module}"


def check_config(config, where: str) -> None:
    """Raise a one-line GramTFError when the config names anything outside the allowlist (nothing is
    imported, nothing deserialized); also when the top level is not a model."""
    custom, activations = _custom_classes(), _activations()
    if not isinstance(config, dict) or config.get("class_name") not in ("Functional", "Sequential", "Model"):
        top = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise GramTFError(f"{where}: the config's top level is {str(top)[:60]!r}, not a Keras model; "
                          "use a model saved by gram_tf")
    stack = [(config, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise GramTFError(f"{where}: the config nests deeper than {MAX_DEPTH} levels; not a model gram_tf saved")
        if isinstance(node, dict):
            if "class_name" in node:
                why = refusal(node, custom, activations)
                if why:
                    name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
                    what = f"layer {str(name)[:60]!r} ({str(node.get('class_name'))[:60]})" if name else "the config"
                    raise GramTFError(f"{where}: {what} names {why[:200]}, which gram_tf never loads (only Keras "
                                      "built-ins, gram_tf's layers and TF-MOT wrappers); nothing was imported. "
                                      "Rebuild the model with gram_tf")
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
