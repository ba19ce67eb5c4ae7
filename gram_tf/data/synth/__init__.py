"""Procedural synthetic Gram-stained micrographs: the built-in default dataset.

The renderer works like a bright-field microscope in miniature. Each field starts as two stain
optical-density maps, crystal violet (CV) and safranin (SAF). Bacteria, debris, stain precipitate
and host cells add density to these maps; optics, illumination and a camera turn them into RGB.

Images come in specimens. The fields of one specimen share a :class:`SpecimenStyle` (stain
strength, decolourisation, magnification, morphology mix, background tint, optics). On disk they
are ``<out>/<class>/FILE_NAME_FORMAT`` and GROUP_PATTERN finds the specimen (both in names.py).

A shifted style (STYLES: faded stain, another hue, defocus, magnification) renders the same kind of
specimens as another lab would see them: the external test sets of docs/generalization.md.

Modules, bottom up: names (classes, file names), style (SpecimenStyle, seeding, STYLES), raster (array
helpers), stamp (cell SDFs into density maps), layout (bacteria, debris), host (host cells),
render (one micrograph), write (a dataset folder).
"""
from .names import CLASSES, FILE_NAME_FORMAT, GROUP_PATTERN, NAME_PATTERN, is_synthetic_folder
from .render import render_micrograph
from .style import ARRANGEMENTS, STYLE_NAMES, STYLES, SpecimenStyle, Style, field_rng, get_style, specimen_style
from .write import synthesize_dataset

__all__ = ["CLASSES", "ARRANGEMENTS", "FILE_NAME_FORMAT", "GROUP_PATTERN", "NAME_PATTERN", "STYLES", "STYLE_NAMES",
           "SpecimenStyle", "Style", "field_rng", "get_style", "is_synthetic_folder", "render_micrograph",
           "specimen_style", "synthesize_dataset"]
