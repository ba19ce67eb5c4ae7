"""Optimize wing: TF-MOT magnitude pruning, quantization-aware training (QAT / pruning-preserving QAT),
cross-layer equalization, int8 bias correction and the per-backbone support catalogue. Each
technique checks layers against TF-MOT's registries before wrapping anything and reports the ones
it leaves alone."""
from .bias_correction import correct_bias, quantized_kernel
from .equalize import channel_range_spread, equalizable_pairs, equalize
from .fold import LINEAR, fold_batchnorm
from .prune import (CHOICE_FILE, apply_pruning, make_schedule, measure_sparsity, pick_within_budget,
                    prunable_layer_report, prune_run, run_sensitivity, strip)
from .reconstruct import reconstruct
from .sensitivity import allocate, measure_sensitivity, sensitivity_table
from .qat import annotate, qat_layer_report, quantize_aware
from .support import backbone_support, support_summary

__all__ = ["correct_bias", "quantized_kernel", "channel_range_spread", "equalizable_pairs", "equalize", "CHOICE_FILE", "LINEAR", "fold_batchnorm", "pick_within_budget", "run_sensitivity", "reconstruct", "allocate",
           "measure_sensitivity", "sensitivity_table", "apply_pruning", "make_schedule", "measure_sparsity", "prunable_layer_report", "prune_run",
           "strip", "annotate", "qat_layer_report", "quantize_aware", "backbone_support", "support_summary"]
