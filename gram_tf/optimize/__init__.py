"""Optimize wing: TF-MOT magnitude pruning, quantization-aware training (QAT / pruning-preserving QAT)
and the per-backbone support catalogue. Each technique checks layers against TF-MOT's registries
before wrapping anything and reports the ones it leaves alone."""
from .prune import (apply_pruning, make_schedule, measure_sparsity, prunable_layer_report, prune_run,
                    strip)
from .qat import annotate, qat_layer_report, quantize_aware
from .support import backbone_support, support_summary

__all__ = ["apply_pruning", "make_schedule", "measure_sparsity", "prunable_layer_report", "prune_run",
           "strip", "annotate", "qat_layer_report", "quantize_aware", "backbone_support", "support_summary"]
