"""Real images with random labels: scikit-learn's bundled digits, for leakage tests.

A model that scores above chance on held-out rows of such data has seen those rows (or their subject)
during training: the labels carry no signal the images could explain.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def make_random_label_digits(root: Path, *, n_subjects: int = 12, per_subject: int = 10, size: int = 32,
                             seed: int = 0) -> Path:
    """Write ``n_subjects * per_subject`` digit images as PNG and a manifest ``path,label,subject``.

    Labels ``a``/``b`` are drawn at random per image (balanced within each subject), so nothing in the
    pixels predicts them. Returns the manifest path (``root/manifest.csv``).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(digits.images), size=n_subjects * per_subject, replace=False)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_subjects):
        labels = np.array(["a", "b"] * (per_subject // 2) + ["a"] * (per_subject % 2))
        rng.shuffle(labels)
        for j in range(per_subject):
            k = int(pick[s * per_subject + j])
            pixels = (digits.images[k] * (255.0 / 16.0)).astype(np.uint8)
            img = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST).convert("RGB")
            rel = f"images/s{s:02d}_{j:02d}.png"
            img.save(root / rel)
            rows.append((rel, str(labels[j]), f"S{s:02d}"))
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "subject"])
        writer.writerows(rows)
    return manifest
