"""Models wing: the backbone registry (at the bottom, importing no model file), the model files that
register themselves (Keras applications, EfficientNet-Lite, ViT/DeiT, PoolFormer, MobileViT, Swin,
BEiT), the flat classifier built on
a backbone, saving/loading, and the catalogue. Never imports optimize/, convert/, bench/ or report/.
"""
# model files register themselves, in catalogue order
from . import keras_apps  # noqa: F401  isort: skip
from . import efficientnet_lite  # noqa: F401  isort: skip
from . import vit  # noqa: F401  isort: skip
from . import poolformer  # noqa: F401  isort: skip
from . import mobilevit  # noqa: F401  isort: skip
from . import swin  # noqa: F401  isort: skip
from . import beit  # noqa: F401  isort: skip
from .catalogue import describe_backbones, measure_sizes
from .classifier import (HEAD_DENSE, HEAD_DROPOUT, HEAD_LAYERS, HEAD_POOL, backbone_layers,
                         build_classifier, count_macs, feature_extractor)
from .registry import (PRE_CAFFE, PRE_RAW, PRE_TF, PRE_TORCH, Backbone, check_input_size,
                       get_backbone, list_backbones, register)
from .serialization import custom_objects, load_model, quiet_tensorflow, save_model
from .weights import WEIGHTS_ENV, resolve_weights, weights_search_dirs

__all__ = [
    "describe_backbones", "measure_sizes", "HEAD_DENSE", "HEAD_DROPOUT", "HEAD_LAYERS", "HEAD_POOL",
    "backbone_layers", "build_classifier", "count_macs", "feature_extractor", "PRE_CAFFE", "PRE_RAW",
    "PRE_TF", "PRE_TORCH", "Backbone", "check_input_size", "get_backbone", "list_backbones", "register",
    "custom_objects", "load_model", "quiet_tensorflow", "save_model", "WEIGHTS_ENV", "resolve_weights",
    "weights_search_dirs",
]
