"""The cells of :mod:`featx.data.synth`: a subject's stain and one segmented cell with its nucleus mask.

Two class signals (``SIGNALS``). ``"cell"`` (the default, the generator featx always had): ALL cells are larger
with irregular, lobed nuclei, HEM cells smaller and rounder, with overlap between the two; a network can tell the
classes by the cell's size alone. ``"nucleus"``: both classes draw the cell (size, outline, cytoplasm, nucleus size
and position) from one distribution and differ only inside the nucleus: an ALL nucleus is lobed and rough, pale,
with coarse clumped chromatin; a HEM nucleus is round, smooth, dense and evenly dark. The stain tints are the
subject's in both, so image-level splits leak the same way.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

#: the class signals :func:`draw_cell` can draw (the first is the default)
SIGNALS = ("cell", "nucleus")

# Base stain colours (RGB, 0-255) of a May-Grunwald-Giemsa-like smear.
_CYTO_RGB = np.array([178.0, 150.0, 205.0])
_NUCLEUS_RGB = np.array([112.0, 62.0, 150.0])
# Spread of a subject's stain: log-gain per channel, brightness offset (0-255 scale).
_STAIN_GAIN_SD = 0.12
_STAIN_BRIGHTNESS_SD = 12.0
# Class morphology: mean cell radius (fraction of the image side), nucleus/cell radius range,
# amplitude of the nucleus lobes and of its boundary roughness.
_SHAPE = {
    "all": {"radius": 0.36, "ratio": (0.70, 0.86), "lobes": 0.10, "rough": 0.018},
    "hem": {"radius": 0.26, "ratio": (0.64, 0.80), "lobes": 0.035, "rough": 0.006},
}
# class_signal "nucleus": one cell for both classes (the mean of the two above, nucleus/cell radius between
# their ratios); the classes differ in the nucleus's lobes, roughness, chromatin (coarse clumps, or none), and
# density (a factor on the nucleus colour: HEM's is darker).
_NUCLEUS_SIGNAL_CELL = {"radius": 0.31, "ratio": (0.66, 0.80)}
_NUCLEUS_SIGNAL = {
    "all": {"lobes": 0.16, "rough": 0.03, "chromatin": 1.0, "density": 1.08},
    "hem": {"lobes": 0.0, "rough": 0.003, "chromatin": 0.0, "density": 0.72},
}
_CHROMATIN = 45.0           # amplitude of the ALL chromatin clumps (0-255 scale)
_RADIUS_SD = 0.09          # cell to cell, within a subject
_SUBJECT_RADIUS_SD = 0.05  # subject to subject (patients differ in morphology too)


def subject_stain(rng: np.random.Generator) -> dict:
    """A subject's stain: per-channel gains and a brightness, shared by all its cells."""
    return {
        "cyto_gain": np.exp(rng.normal(0.0, _STAIN_GAIN_SD, 3)),
        "nucleus_gain": np.exp(rng.normal(0.0, _STAIN_GAIN_SD, 3)),
        "brightness": float(rng.normal(0.0, _STAIN_BRIGHTNESS_SD)),
        "texture": float(rng.uniform(4.0, 14.0)),
        "scale": float(np.exp(rng.normal(0.0, _SUBJECT_RADIUS_SD))),
    }


def _radial(rng: np.random.Generator, theta: np.ndarray, low: tuple[int, int], amp: float,
            high: tuple[int, int], noise: float) -> np.ndarray:
    """A closed boundary 1 + sum of random cosines: low orders shape lobes, high orders roughen it."""
    r = np.ones_like(theta)
    for k in range(low[0], low[1] + 1):
        r += rng.uniform(0.3, 1.0) * amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    for k in range(high[0], high[1] + 1):
        r += rng.normal(0.0, noise) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r


def draw_cell(rng: np.random.Generator, cls: str, stain: dict, size: int,
              signal: str = "cell") -> tuple[np.ndarray, np.ndarray]:
    """One segmented cell (uint8 RGB, size x size) centred on a black background, and its nucleus mask (bool:
    the soft nucleus mask times the cell mask above 0.5; computed from the same draws, drawing nothing more).

    ``signal`` (one of ``SIGNALS``) says where the class shows; ``"cell"`` draws exactly what featx always drew
    (the same random stream), ``"nucleus"`` draws a few more numbers for the chromatin of ALL nuclei."""
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cx = s / 2 + rng.normal(0.0, 0.03 * s)
    cy = s / 2 + rng.normal(0.0, 0.03 * s)
    nucleus_signal = signal == "nucleus"
    shape = {**_NUCLEUS_SIGNAL_CELL, **_NUCLEUS_SIGNAL[cls]} if nucleus_signal else _SHAPE[cls]
    cell_r = shape["radius"] * stain["scale"] * s * float(np.clip(rng.normal(1.0, _RADIUS_SD), 0.7, 1.35))
    ratio = float(rng.uniform(*shape["ratio"]))
    lobe_amp, rough = shape["lobes"], shape["rough"]
    theta = np.arctan2(yy - cy, xx - cx)
    dist = np.hypot(yy - cy, xx - cx)
    cell_edge = cell_r * _radial(rng, theta, (2, 3), 0.05, (4, 6), 0.008)
    cell_edge = np.minimum(cell_edge, 0.47 * s)
    # The nucleus sits a little off-centre; its boundary is lobed for ALL and smooth for HEM.
    off = rng.normal(0.0, 0.04 * cell_r, 2)
    ntheta = np.arctan2(yy - cy - off[1], xx - cx - off[0])
    ndist = np.hypot(yy - cy - off[1], xx - cx - off[0])
    nucleus_edge = ratio * cell_r * _radial(rng, ntheta, (2, 5), lobe_amp, (6, 14), rough)
    nucleus_edge = np.minimum(nucleus_edge, cell_edge - 0.5)
    soft = max(0.5, s / 160.0)
    cell_mask = 1.0 / (1.0 + np.exp(-(cell_edge - dist) / soft))
    nucleus_mask = 1.0 / (1.0 + np.exp(-(nucleus_edge - ndist) / soft))

    # Colours: base stain x subject gains + subject brightness + small per-cell variation.
    cell_jitter = rng.normal(0.0, 0.03, 3)
    cyto = _CYTO_RGB * stain["cyto_gain"] * (1.0 + cell_jitter) + stain["brightness"]
    nucleus = _NUCLEUS_RGB * stain["nucleus_gain"] * (1.0 + cell_jitter) + stain["brightness"]
    if nucleus_signal:
        nucleus = nucleus * shape["density"]
    # Chromatin texture: blotchy low-frequency noise, stronger in the nucleus.
    blotch = _blotches(rng, max(4, size // 8), size)
    colour = (cyto[None, None, :] * (1.0 - nucleus_mask[..., None])
              + nucleus[None, None, :] * nucleus_mask[..., None])
    colour = colour + (stain["texture"] * (0.4 + nucleus_mask) * blotch)[..., None]
    if nucleus_signal and shape["chromatin"]:
        # coarse chromatin clumps, in the nucleus only: dark where the noise is high, pale where it is low
        clumps = _blotches(rng, max(4, size // 6), size)
        colour = colour + (shape["chromatin"] * _CHROMATIN * nucleus_mask * np.tanh(2.0 * clumps))[..., None]
    colour = colour + rng.normal(0.0, 4.0, colour.shape)
    img = np.clip(colour, 0, 255) * cell_mask[..., None]
    img = np.rint(np.clip(img, 0, 255)).astype(np.uint8)
    # A last light blur imitates the optics; the background stays black.
    pil = Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=max(0.4, s / 240.0)))
    return np.asarray(pil), nucleus_mask * cell_mask > 0.5


def _blotches(rng: np.random.Generator, grid: int, size: int) -> np.ndarray:
    """Standard normal noise on a ``grid`` x ``grid`` lattice, smoothly (bicubic) enlarged to size x size."""
    noise = rng.normal(0.0, 1.0, (grid, grid)).astype(np.float32)
    return np.asarray(Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
