"""Data wing: ImageFolder scan/check/split and the manifest, decoding a manifest's images, the
tf.data pipeline, and synthetic Gram stains. TensorFlow only inside the tf.data functions."""
from .dataset import (MANIFEST_COLUMNS, SPLITS, check_dataset, external_items, manifest_labels, manifest_path, probe_image,
                      read_manifest, require_classes, resolve_group_pattern, scan_image_folder, split_dataset,
                      split_rows, summarize_split, write_manifest)
from .images import load_images, load_split
from .synth import CLASSES, GROUP_PATTERN as SYNTH_GROUP_PATTERN, render_micrograph, synthesize_dataset
from .tfdata import augment_image, make_dataset, normalize_tf

__all__ = [
    "MANIFEST_COLUMNS", "SPLITS", "check_dataset", "external_items", "manifest_labels", "manifest_path", "probe_image", "read_manifest",
    "require_classes", "resolve_group_pattern", "scan_image_folder", "split_dataset", "split_rows", "summarize_split",
    "write_manifest", "load_images", "load_split", "augment_image", "make_dataset", "normalize_tf",
    "CLASSES", "SYNTH_GROUP_PATTERN", "render_micrograph", "synthesize_dataset",
]
