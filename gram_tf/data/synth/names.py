"""What a synthetic dataset looks like on disk: its class folders and its file names.

The file-name format and the regex that finds a file's specimen are defined here only; splits
(`gram-tf data split`, `train --data`, `run`), the docs and the tests take them from here.
"""
from __future__ import annotations

import re

CLASSES = ("gram_negative", "gram_positive")

# <out>/<class>/FILE_NAME_FORMAT. GROUP_PATTERN's group 1 is class + specimen, so the fields of one
# specimen (they share its stain and magnification) never land in two splits.
FILE_NAME_FORMAT = "{cls}_s{specimen:04d}_f{field:02d}.png"
GROUP_PATTERN = r"^(gram_\w+?_s\d+)_f"
NAME_PATTERN = re.compile(GROUP_PATTERN + r"\d+\.png$")  # a whole name of FILE_NAME_FORMAT


def is_synthetic_folder(classes, names) -> bool:
    """True for what `gram-tf data synth` writes: exactly the CLASSES folders, every image named by
    FILE_NAME_FORMAT. Such a folder is split with GROUP_PATTERN unless a pattern is given."""
    names = list(names)
    return sorted(classes) == sorted(CLASSES) and bool(names) and all(NAME_PATTERN.match(n) for n in names)
