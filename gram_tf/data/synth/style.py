"""What the fields of one specimen share (SpecimenStyle), the seeding of specimens and fields, and the
shifted styles (STYLES) that render test sets from another lab.

Every file has its own RNG, seeded by ``SeedSequence([seed, class_index, specimen, field])``; a
specimen's style has its own stream. A file's bytes therefore do not depend on ``per_class`` or on
which files already exist. A shifted style changes a sampled SpecimenStyle and nothing else, so a
specimen and its fields are the same in every style: only the stain, optics or magnification differ.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ...config import short
from ...errors import GramTFError

# Cell arrangements; SpecimenStyle.morphology holds one weight per entry (fraction of cells).
ARRANGEMENTS = (
    "coccus",          # single cocci
    "diplococcus",     # pairs (kidney-bean Neisseria-like or lancet pneumococcus-like)
    "streptococcus",   # chains of cocci
    "staphylococcus",  # grape-like clusters
    "bacillus",        # single rods / coccobacilli
    "diplobacillus",   # rod pairs, end to end or V-shaped
    "streptobacillus",  # short chains of rods
    "palisade",        # rods side by side
)
IS_ROD = np.array([False, False, False, False, True, True, True, True])

# Extra last SeedSequence word for the specimen-style stream. SeedSequence([a, b, c]) and
# SeedSequence([a, b, c, 0]) give the same state, so the style stream needs its own tag. The tag
# must also differ from any field index.
_STYLE_TAG = 0x53504543  # "SPEC"
MAX_FIELDS = 100_000  # fields per specimen: far below the tag

# Stain optical density per unit density, for the R, G and B channels.
_CV_OD = np.array([1.10, 1.65, 0.42])   # crystal violet: absorbs red+green -> deep violet
_SAF_OD = np.array([0.13, 0.74, 0.22])  # safranin: absorbs green (+some blue) -> pink/red

_BG_TINTS = (  # (RGB gain, weight): illuminant / white balance families
    ((1.00, 0.98, 0.90), 0.30),   # warm halogen, cream background
    ((1.00, 1.00, 1.00), 0.25),   # neutral
    ((1.00, 0.95, 0.97), 0.17),   # faint pink
    ((0.94, 0.97, 1.00), 0.18),   # faint blue
    ((0.88, 0.85, 1.00), 0.10),   # lavender (phone-on-eyepiece look)
)


@dataclass
class SpecimenStyle:
    """What the fields of one specimen (slide) share. Lengths are in micrometres."""

    fov_um: float                 # field-of-view width: the magnification (px/um = size / fov_um)
    coccus_diam_um: float
    rod_width_um: float
    rod_length_um: float
    rod_corner: float             # end roundness of rods, 0.3 (square, boxcar) .. 1 (round)
    diplo_elong: float            # diplococcus cell extent along the pair axis / across (<1 kidney)
    size_jitter: float            # per-cell log-size standard deviation
    bend: float                   # rod curvature standard deviation (1/um)
    spores: float                 # fraction of rods showing an unstained endospore
    morphology: tuple             # weights over ARRANGEMENTS (fractions of cells)
    chain_len: float              # mean cells per chain
    cluster_size: float           # mean cocci per cluster
    coverage: float               # median fraction of the field covered by bacteria
    clumping: float               # 0 uniform .. 1 patchy spatial distribution
    decolourisation: float        # 0 under- .. 0.5 correct .. 1 over-decolourised
    cv_strength: float            # stain uptake multipliers
    saf_strength: float
    cv_od: tuple                  # jittered stain OD vectors (RGB)
    saf_od: tuple
    illuminant: tuple             # RGB gain incl. exposure: background colour
    vignette: float
    gradient: float
    haze: float                   # safranin-stained background smear (proteinaceous material)
    debris: float                 # faint specks per 100 um^2
    precipitate: float            # crystal-violet precipitate groups per 100 um^2
    host_cells: float             # expected host cells (neutrophils / epithelial) per field
    defocus_um: float
    rim: float                    # dark cell rim strength
    halo: float                   # bright refraction halo strength
    noise: float                  # sensor noise sigma (0..1 intensity scale)
    jpeg_quality: int             # 0 = no JPEG round trip
    hue_shift_deg: float
    saturation: float
    gamma: float
    field_stop: float             # 0 = none, else radius of the circular field stop (x half-width)

    # -- sampling ---------------------------------------------------------------------------------
    @classmethod
    def sample(cls, rng: np.random.Generator, gram: str) -> "SpecimenStyle":
        """Draw a random specimen style. Morphology and sizes lean towards what is typical for the
        Gram class, but every arrangement is possible for both classes."""
        positive = gram_is_positive(gram)
        u = rng.uniform
        morph = np.zeros(len(ARRANGEMENTS))
        # cell dimensions (um)
        coccus_d = u(0.75, 1.2)
        if positive:
            p_cocci = 0.55
            cocci_types = (([0.20, 0.20, 0.05, 0.55], 0.45),   # staphylococcus-like
                           ([0.10, 0.25, 0.60, 0.05], 0.35),   # streptococcus-like
                           ([0.25, 0.60, 0.10, 0.05], 0.20))   # pneumococcus / enterococcus-like
            rod_types = (((0.9, 1.3), (3.0, 6.0), (0.25, 0.55), [0.35, 0.12, 0.45, 0.08], 0.4),
                         ((0.5, 0.8), (1.5, 3.5), (0.8, 1.0), [0.30, 0.30, 0.05, 0.35], 0.3),
                         ((0.6, 1.0), (2.0, 7.0), (0.6, 1.0), [0.50, 0.20, 0.25, 0.05], 0.3))
            diplo_elong = u(0.95, 1.35)
        else:
            p_cocci = 0.30
            cocci_types = (([0.25, 0.65, 0.05, 0.05], 0.60),   # Neisseria-like diplococci
                           ([0.50, 0.35, 0.10, 0.05], 0.25),   # Moraxella / Acinetobacter-like
                           ([0.30, 0.20, 0.10, 0.40], 0.15))   # Veillonella-like clumps
            rod_types = (((0.5, 0.8), (1.5, 3.0), (0.85, 1.0), [0.70, 0.20, 0.07, 0.03], 0.55),
                         ((0.4, 0.6), (0.8, 1.4), (0.9, 1.0), [0.60, 0.30, 0.07, 0.03], 0.25),
                         ((0.4, 0.7), (2.0, 5.0), (0.8, 1.0), [0.60, 0.20, 0.15, 0.05], 0.20))
            diplo_elong = u(0.7, 1.05)
            coccus_d *= 0.92
        tw = np.array([t[1] for t in cocci_types])
        cw = np.asarray(cocci_types[rng.choice(len(tw), p=tw / tw.sum())][0])
        rw = np.array([t[4] for t in rod_types])
        rt_i = int(rng.choice(len(rw), p=rw / rw.sum()))
        rt = rod_types[rt_i]
        spores = u(0.1, 0.6) if positive and rt_i != 1 and rng.random() < 0.35 else 0.0
        rod_w, rod_l, corner = u(*rt[0]), u(*rt[1]), u(*rt[2])
        rod_l = max(rod_l, rod_w * 1.3)
        cw = rng.dirichlet(cw * 25 + 0.05)
        rodw = rng.dirichlet(np.asarray(rt[3]) * 25 + 0.05)
        cocci_first = rng.random() < p_cocci
        minor = u(0.1, 0.3) if rng.random() < 0.22 else 0.0  # mixed morphology
        frac_cocci = (1 - minor) if cocci_first else minor
        morph[:4] = cw * frac_cocci
        morph[4:] = rodw * (1 - frac_cocci)
        morph = morph / morph.sum()

        tints = np.array([t[0] for t in _BG_TINTS])
        tw = np.array([t[1] for t in _BG_TINTS])
        tint = tints[rng.choice(len(tw), p=tw / tw.sum())] * np.exp(rng.normal(0, 0.015, 3))
        illuminant = tint / tint.max() * u(0.88, 0.94)

        cv_od = _CV_OD * np.exp(rng.normal(0, [0.08, 0.04, 0.10]))
        saf_od = _SAF_OD * np.exp(rng.normal(0, [0.15, 0.04, 0.12]))
        host = 0.0
        if rng.random() < 0.4:  # clinical smear rather than a culture
            host = float(np.exp(u(np.log(0.2), np.log(2.0))))
        return cls(
            fov_um=float(np.exp(u(np.log(18.0), np.log(60.0)))),
            coccus_diam_um=float(coccus_d),
            rod_width_um=float(rod_w),
            rod_length_um=float(rod_l),
            rod_corner=float(corner),
            diplo_elong=float(diplo_elong),
            size_jitter=float(u(0.06, 0.16)),
            bend=float(u(0.0, 0.04) if positive else u(0.0, 0.08)),
            spores=float(spores),
            morphology=tuple(float(m) for m in morph),
            chain_len=float(u(3.5, 12.0)),
            cluster_size=float(np.exp(u(np.log(5.0), np.log(35.0)))),
            coverage=float(np.exp(u(np.log(0.03), np.log(0.40)))),
            clumping=float(u(0.0, 1.0)),
            decolourisation=float(rng.beta(3.0, 3.0)),
            cv_strength=float(np.exp(rng.normal(0, 0.12))),
            saf_strength=float(np.exp(rng.normal(0, 0.18))),
            cv_od=tuple(float(v) for v in cv_od),
            saf_od=tuple(float(v) for v in saf_od),
            illuminant=tuple(float(v) for v in illuminant),
            vignette=float(u(0.02, 0.22)),
            gradient=float(u(0.0, 0.08)),
            haze=float(u(0.0, 0.07) if rng.random() < 0.5 else u(0.0, 0.015)),
            debris=float(np.exp(u(np.log(0.05), np.log(1.5)))),
            precipitate=float(0.0 if rng.random() < 0.6 else np.exp(u(np.log(0.01), np.log(0.25)))),
            host_cells=host,
            defocus_um=float(u(0.02, 0.11)),
            rim=float(u(0.8, 2.2)),
            halo=float(u(0.0, 0.1) if rng.random() < 0.4 else u(0.1, 0.35)),
            noise=float(np.exp(u(np.log(0.003), np.log(0.018)))),
            jpeg_quality=int(0 if rng.random() < 0.5 else rng.integers(55, 93)),
            hue_shift_deg=float(rng.normal(0, 4.0)),
            saturation=float(u(0.85, 1.2)),
            gamma=float(u(0.9, 1.1)),
            field_stop=float(u(1.05, 1.4) if rng.random() < 0.07 else 0.0),
        )

    # derived stain behaviour -------------------------------------------------------------------
    @property
    def over_decolourised_fraction(self) -> float:
        """Fraction of Gram-positive cells that lost most of their crystal violet."""
        return 0.03 + 0.5 * _smoothstep(0.6, 1.0, self.decolourisation)

    @property
    def cv_retained_negative(self) -> float:
        """Crystal violet that Gram-negative cells keep (under-decolourised smears)."""
        return 0.02 + 0.4 * _smoothstep(0.4, 0.0, self.decolourisation)


def _smoothstep(e0: float, e1: float, x: float) -> float:
    t = min(max((x - e0) / (e1 - e0), 0.0), 1.0)
    return t * t * (3 - 2 * t)


def gram_is_positive(gram: str) -> bool:
    g = str(gram).lower().strip()
    if g in ("positive", "gram_positive", "pos", "+"):
        return True
    if g in ("negative", "gram_negative", "neg", "-"):
        return False
    raise GramTFError(f"gram must be 'positive' or 'negative', got {gram!r}")


def specimen_style(seed: int, class_index: int, specimen: int, gram: str, style: str = "default") -> SpecimenStyle:
    rng = np.random.default_rng(np.random.SeedSequence([seed, class_index, specimen, _STYLE_TAG]))
    return get_style(style).apply(SpecimenStyle.sample(rng, gram))


@dataclass(frozen=True)
class Style:
    """A shift of the specimen distribution a lab meets: each SpecimenStyle field in `scale` is multiplied
    by its factor, each in `add` gets its offset."""
    name: str
    shift: str  # what a lab would see, for the docs and --help
    scale: tuple = ()  # ((SpecimenStyle field, factor), ...)
    add: tuple = ()  # ((SpecimenStyle field, offset), ...)

    def apply(self, st: SpecimenStyle) -> SpecimenStyle:
        changes = {f: getattr(st, f) * k for f, k in self.scale}
        for f, d in self.add:
            changes[f] = changes.get(f, getattr(st, f)) + d
        return dataclasses.replace(st, **changes) if changes else st


# The styles of `gram-tf data synth --style` and data.external.NAME.synth_style (one list: the CLI's choice,
# the config check and docs/generalization.md come from it). Sizes of the shifts: the sampled ranges above
# (defocus 0.02-0.11 um, hue +-4 deg, stain uptake +-12-18 %) are one lab's spread; each shift leaves it.
STYLES = (
    Style("default", "the built-in mix of stains, optics and magnifications (the study's own data)"),
    Style("faded", "a weak or old stain batch: crystal violet and safranin uptake at 45 %",
          scale=(("cv_strength", 0.45), ("saf_strength", 0.45))),
    Style("hue", "another stain lot or camera white balance: colours rotated 40 degrees", add=(("hue_shift_deg", 40.0),)),
    Style("defocus", "slides slightly out of focus: 0.5 um more defocus blur", add=(("defocus_um", 0.5),)),
    Style("magnified", "a higher-power objective: twice the magnification (half the field of view)",
          scale=(("fov_um", 0.5),)),
)
STYLE_NAMES = tuple(s.name for s in STYLES)


def get_style(name: str) -> Style:
    for s in STYLES:
        if s.name == name:
            return s
    raise GramTFError(f"unknown synthetic style {short(name)}; choose one of {', '.join(STYLE_NAMES)}")


def field_rng(seed: int, class_index: int, specimen: int, field: int) -> np.random.Generator:
    """The RNG of one image: independent of per_class and of the other files."""
    return np.random.default_rng(np.random.SeedSequence([seed, class_index, specimen, field]))
