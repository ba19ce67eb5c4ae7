"""Convert wing: Keras -> TFLite variants, each checked against the Keras model.

Floors, bottom to top: `variants` (the variant table, each row carrying its builder), `tracing`
(the traced function and representative images) and `scoring` (an artifact's accuracy through the
deployed classifier), `calibration` (the calibrate-only route and the
activation range methods), `recipe` (the int8 recipe: equalization, bias correction, calibration),
`converter` (the TFLite converter toolkit and calibrated full-int8), `guard` (the accuracy guard),
`selective` and `fast_int8` (the two mixed-precision strategies, which register their variants
here), `stage` (the conversion stage writing artifacts and manifest.json). The toolkit never
imports the strategies; the strategies never import the stage.
"""
from . import converter  # noqa: F401  isort: skip  (registers the plain variants first)
from . import selective  # noqa: F401  isort: skip  (registers int8-selective)
from . import fast_int8  # noqa: F401  isort: skip  (registers int8-fast)
from .converter import (CalibratedInt8, check_artifact, convert_model, convert_variant, io_details,
                        layer_errors, ranked_errors, tflite_weight_stats)
from .recipe import Int8Recipe, resolve_recipe
from .tracing import normalized_images, quiet_absl, representative_gen
from .fast_int8 import choose_float_nodes, fast_int8
from .guard import float_accuracy, recover_accuracy
from .scoring import blob_accuracy, blob_probs
from .selective import selective_int8
from .stage import (MANIFEST_NAME, artifact_stem, convert_run, default_out_dir, export_artifact,
                    keras_model_sizes, representative_images)
from .variants import VARIANTS, BuildRequest, Variant, get_variant, register_variant, variant_names

__all__ = [
    "CalibratedInt8", "check_artifact", "convert_model", "convert_variant", "io_details", "layer_errors",
    "normalized_images", "quiet_absl", "ranked_errors", "representative_gen", "tflite_weight_stats",
    "choose_float_nodes", "fast_int8", "blob_accuracy", "blob_probs", "float_accuracy", "recover_accuracy",
    "selective_int8", "MANIFEST_NAME", "artifact_stem", "convert_run", "default_out_dir", "export_artifact",
    "keras_model_sizes", "representative_images", "VARIANTS", "BuildRequest", "Variant", "get_variant",
    "register_variant", "variant_names", "Int8Recipe", "resolve_recipe",
]
