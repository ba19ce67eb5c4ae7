"""Train wing: transfer learning on a split manifest (frozen backbone + head, optional partial
fine-tuning), evaluation, and BatchNorm re-estimation. Writes the run directory (gram_tf.run)."""
from .batchnorm import recalibrate_batchnorm
from .evaluate import evaluate_keras, plot_confusion, predict_probs
from .transfer import class_weights, get_strategy, train

__all__ = ["recalibrate_batchnorm", "evaluate_keras", "plot_confusion", "predict_probs", "class_weights",
           "get_strategy", "train"]
