"""Deploy wing: everything a device needs to run a gram_tf `.tflite`, without TensorFlow.

Standard library, numpy, Pillow and the LiteRT interpreter only; no other gram_tf wing is imported
(tests/test_layout.py checks it). Training decodes images through `imaging` too, so training and
deployment preprocess identically.
"""
from .classifier import Classifier, check_labels, is_label
from .imaging import (CHANNEL_ORDERS, DEFAULT_PREPROCESSING, IMAGE_EXTENSIONS, IN_GRAPH, MAX_IMAGE_PIXELS,
                      RESIZE_MODES, find_images, is_image_file, load_image, load_resized, normalize, outside_graph,
                      pixel_input, resize_image, validate_preprocessing)
from .interpreter import interpreter_class, make_interpreter, prepare_failure
from .metadata import (MANIFEST_NAME, METADATA_FORMAT, METADATA_NAME, embed_metadata, embed_payload, list_metadata_names,
                       pack_files, read_metadata, read_sidecar, sidecar_path, split_packed, write_sidecar)
from .standard_metadata import (LABELS_FILE, STANDARD_NAME, build_metadata, classifier_card, package_model,
                                read_packed_files, read_standard_metadata)
from .output import ResultFile, format_predictions, to_csv, to_json
from .stream import Decoded, decode_stream, predict_to_file
from .timing import latency_stats, peak_rss_mb, sample_ms, time_blob, time_interleaved

__all__ = [
    "Classifier", "CHANNEL_ORDERS", "DEFAULT_PREPROCESSING", "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS",
    "RESIZE_MODES", "find_images", "is_image_file", "load_image", "normalize", "resize_image",
    "validate_preprocessing", "interpreter_class", "make_interpreter", "prepare_failure", "METADATA_FORMAT",
    "METADATA_NAME", "embed_metadata", "list_metadata_names", "read_metadata", "read_sidecar",
    "sidecar_path", "write_sidecar", "format_predictions", "to_csv", "to_json", "latency_stats",
    "peak_rss_mb", "sample_ms", "time_blob", "time_interleaved", "ResultFile", "Decoded", "decode_stream",
    "predict_to_file", "load_resized", "IN_GRAPH", "outside_graph", "pixel_input", "embed_payload", "pack_files",
    "split_packed", "LABELS_FILE", "STANDARD_NAME", "build_metadata", "classifier_card", "package_model",
    "read_packed_files", "read_standard_metadata", "check_labels", "is_label", "MANIFEST_NAME",
]
