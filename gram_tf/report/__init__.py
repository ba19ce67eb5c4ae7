"""Report wing: the one result-row schema, statistics, plots and the Markdown report. No TensorFlow."""
from . import stats
from .markdown import build_report
from .schema import (COLUMNS, INT_COLUMNS, REQUIRED_COLUMNS, ROW_COLUMNS, STR_COLUMNS, SUMMARY_COLUMNS,
                     add_relative_columns, is_reference, load_results, normalize_row, reference_key,
                     write_results)
from .view import PLOT_FILES, VARIANT_ORDER, fmt_bytes, fmt_p, model_key, model_label

__all__ = [
    "stats", "build_report", "COLUMNS", "INT_COLUMNS", "REQUIRED_COLUMNS", "ROW_COLUMNS", "STR_COLUMNS",
    "SUMMARY_COLUMNS", "add_relative_columns", "is_reference", "load_results", "normalize_row",
    "reference_key", "write_results", "PLOT_FILES", "VARIANT_ORDER", "fmt_bytes", "fmt_p", "model_key",
    "model_label",
]
