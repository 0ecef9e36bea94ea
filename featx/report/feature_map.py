"""A map of the feature space: a 2-D embedding of a store's labelled rows, and how strongly they cluster by
subject beside by class (the picture of why image-level splits score higher than subject-level ones).

The embedding is drawn by :mod:`featx.report.feature_map_plot`. Its numbers are **not** measured on the 2-D
map, which distorts distances (t-SNE and UMAP keep neighbourhoods, not scales), but in the space the
embedding starts from: the features standardised per column and reduced by PCA to at most 50 dimensions.

Both numbers are a neighbour agreement, each with its chance level from shuffled labels:

* **class clustering**: the share of a cell's ``k`` nearest neighbours (any cell) that have its class;
  chance: class labels shuffled over all cells.
* **subject clustering**: the share of a cell's ``k`` nearest neighbours *among the cells of its class* that
  come from its subject; chance: subject labels shuffled within each class. Every subject holds one class,
  so looking within the class keeps the class signal out of the subject number: what is left is the subject
  itself (its stain, its morphology), what an image-level split lets a classifier recognise.

``k`` is one less than the median number of cells per subject, between 1 and 10 (without subjects: a tenth of
the rows, between 1 and 10), so that a subject's cells can fill a cell's neighbourhood. The chance level is the
mean of ``permutations`` shuffles, given with their standard deviation.
"""
from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.errors import FeatxError, arg
from featx.store.reader import load_features

METHODS = ("auto", "tsne", "umap", "pca")
METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
MIN_ROWS = 10      # fewer labelled rows make no map worth reading (and t-SNE's perplexity needs some)
MAX_PCA = 50       # the embedding and the numbers start from at most this many principal components
MAX_K = 10


@dataclass(frozen=True)
class MapStep:
    """One step of :func:`feature_map` as it starts: ``name`` is read, pca, embed, numbers or draw."""

    name: str
    text: str


@dataclass(frozen=True)
class Clustering:
    """How strongly cells cluster by ``label`` ("class" or "subject") in the feature space: ``value``, the mean
    share of a cell's ``k`` nearest neighbours (within its class for subjects) that share its label, beside
    ``chance`` and ``chance_sd``, its mean and standard deviation over ``permutations`` shuffles of the labels."""

    label: str
    value: float
    chance: float
    chance_sd: float
    k: int
    permutations: int

    @property
    def sds_above(self) -> float:
        """How many standard deviations of the shuffles ``value`` lies above ``chance``."""
        if self.chance_sd > 0:
            return (self.value - self.chance) / self.chance_sd
        return 0.0 if self.value == self.chance else float("inf") * np.sign(self.value - self.chance)

    def text(self) -> str:
        """``0.43 (chance 0.20 ± 0.05)``."""
        return f"{self.value:.2f} (chance {self.chance:.2f} ± {self.chance_sd:.2f})"


@dataclass(frozen=True)
class FeatureMap:
    """A store's labelled rows in 2-D (``embedding``, n x 2, by ``method``) with their class indices
    (``y``, naming ``classes``) and subjects, and the two clusterings measured in the ``pca_dims``-dimensional
    PCA space of the standardised features. ``subject_clustering`` is None when some rows have no subject
    (``note`` says so); ``path`` is the figure once drawn."""

    embedding: np.ndarray
    y: np.ndarray
    classes: list[str]
    subjects: np.ndarray
    method: str
    seed: int
    pca_dims: int
    class_clustering: Clustering
    subject_clustering: Clustering | None
    tap: str = ""
    store: str = ""
    note: str = ""
    path: Path | None = field(default=None)

    @property
    def n_cells(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def n_subjects(self) -> int:
        """Distinct subject ids (0 when the rows have none)."""
        return len(set(self.subjects[self.subjects != ""]))


def check_method(method: str) -> str:
    """The embedding ``method`` to use: ``auto`` is UMAP when umap-learn is installed, else t-SNE."""
    if method not in METHODS:
        raise FeatxError(f"{arg('method', method)}: not a map method; choose one of {', '.join(METHODS)}")
    umap_installed = importlib.util.find_spec("umap") is not None
    if method == "umap" and not umap_installed:
        raise FeatxError(f"{arg('method', 'umap')} needs the umap-learn package: pip install umap-learn "
                         f"(or use {arg('method', 'tsne')})")
    if method == "auto":
        return "umap" if umap_installed else "tsne"
    return method


def feature_map(store: str | Path | Sequence[str | Path], *, tap: str | Sequence[str] | None = None,
                method: str = "auto", seed: int = 0, permutations: int = 200,
                on_step: Callable[[MapStep], None] | None = None) -> FeatureMap:
    """The map of a feature store's labelled rows at ``tap`` (None: the store's default tap): see the module's
    docstring for the numbers. ``method``: auto, tsne, umap or pca; the same ``seed`` gives the same map.
    Several stores (side by side) or taps (concatenated) are read as :func:`featx.load_features` reads them."""
    step = on_step or (lambda event: None)
    method = check_method(method)
    stores = [store] if isinstance(store, (str, Path)) else list(store)
    taps = tap if tap is None or isinstance(tap, str) else "+".join(tap)
    step(MapStep("read", f"reading {' + '.join(map(str, stores))}" + (f" (tap {taps})" if taps else "")))
    features = load_features(store, tap)
    return map_arrays(features.X, features.y, features.subjects, classes=features.classes, method=method,
                      seed=seed, permutations=permutations, tap=features.tap,
                      store=" + ".join(map(str, stores)), on_step=on_step)


def map_arrays(X: np.ndarray, y: np.ndarray, subjects: np.ndarray | None, *, classes: list[str],
               method: str = "auto", seed: int = 0, permutations: int = 200, k: int | None = None,
               tap: str = "", store: str = "", on_step: Callable[[MapStep], None] | None = None) -> FeatureMap:
    """:func:`feature_map` of features ``X`` (n x d) with class indices ``y`` and ``subjects`` ("" or None:
    unknown), held in memory. ``k``: neighbours counted (None: from the subjects' sizes, see the module)."""
    step = on_step or (lambda event: None)
    method = check_method(method)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    n = X.shape[0]
    subjects = np.full(n, "", dtype=object) if subjects is None else np.asarray(subjects).astype(str)
    where = store or "the features"
    if n < MIN_ROWS:
        raise FeatxError(f"{where}: {n} labelled rows; a map needs at least {MIN_ROWS}")
    if len(np.unique(y)) < 2:
        raise FeatxError(f"{where}: every labelled row has one class ({classes[int(y[0])]}); a map colours rows "
                         "of at least two classes")
    has_subjects = bool(np.all(subjects != ""))
    k = _neighbours(subjects if has_subjects else None, n) if k is None else int(k)
    dims = min(MAX_PCA, n, X.shape[1])
    step(MapStep("pca", f"PCA of the standardised features: {X.shape[1]} -> {dims} dimensions"))
    # deferred: scikit-learn's decomposition, neighbours and t-SNE weigh on every featx command's start
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    space = PCA(n_components=dims, svd_solver="full", random_state=seed).fit_transform(
        StandardScaler().fit_transform(X))
    compiles = " (UMAP's first run in a process compiles its code: 10-20 s)" if method == "umap" else ""
    step(MapStep("embed", f"{METHOD_NAMES[method]} of {n} rows to 2-D{compiles}"))
    embedding = _embed(space, method, seed)
    step(MapStep("numbers", f"clustering by class and subject ({permutations} shuffles each)"))
    rng = np.random.default_rng(seed)
    by_class = neighbour_agreement(space, y, k=k, permutations=permutations, rng=rng, label="class")
    by_subject, note = None, ""
    if has_subjects:
        by_subject = neighbour_agreement(space, subjects, groups=y, k=k, permutations=permutations, rng=rng,
                                         label="subject")
    else:
        missing = int(np.sum(subjects == ""))
        note = (f"{missing} of {n} rows have no subject id: the map shows classes only, with no subject panel "
                "or subject number")
    return FeatureMap(embedding=embedding, y=y, classes=list(classes), subjects=subjects, method=method, seed=seed,
                      pca_dims=dims, class_clustering=by_class, subject_clustering=by_subject, tap=tap,
                      store=store, note=note)


def _neighbours(subjects: np.ndarray | None, n: int) -> int:
    """One less than the median cells per subject, within 1..10 (without subjects a tenth of the rows, within
    1..10), and below ``n``."""
    if subjects is None:
        k = int(np.clip(n // 10, 1, MAX_K))
    else:
        _, counts = np.unique(subjects, return_counts=True)
        k = int(np.clip(int(np.median(counts)) - 1, 1, MAX_K))
    return max(1, min(k, n - 2))


def _embed(space: np.ndarray, method: str, seed: int) -> np.ndarray:
    n = space.shape[0]
    if method == "pca":
        out = space[:, :2]
    elif method == "tsne":
        from sklearn.manifold import TSNE  # deferred: as PCA in map_arrays

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        out = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(space)
    else:
        import umap  # deferred: umap-learn is optional and compiles its numba code (10-20 s) on first use

        with warnings.catch_warnings():  # a seed makes UMAP run on one thread, and it says so each time
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            out = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed).fit_transform(space)
    return np.asarray(out, dtype=np.float64)


def neighbour_agreement(space: np.ndarray, labels: np.ndarray, *, k: int, groups: np.ndarray | None = None,
                        permutations: int = 200, rng: np.random.Generator | None = None,
                        label: str = "label") -> Clustering:
    """The mean share of each row's ``k`` nearest neighbours in ``space`` (Euclidean; the row itself left out)
    that have its ``labels`` value, neighbours sought among the rows of its ``groups`` value (None: all rows),
    beside the same with ``labels`` shuffled within each group ``permutations`` times (mean and sd)."""
    from sklearn.neighbors import NearestNeighbors  # deferred: as PCA in map_arrays

    rng = rng or np.random.default_rng(0)
    groups = np.zeros(len(labels), dtype=int) if groups is None else np.asarray(groups)
    codes = np.unique(np.asarray(labels), return_inverse=True)[1]
    members, neighbours = [], []
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        if rows.size < 2:
            continue  # a row alone in its group has no neighbour to agree with
        k_group = min(k, rows.size - 1)
        found = NearestNeighbors(n_neighbors=k_group).fit(space[rows]).kneighbors(return_distance=False)
        members.append(rows)
        neighbours.append(rows[found])

    def agreement(code: np.ndarray) -> float:
        shares = [(code[near] == code[rows][:, None]).mean(axis=1) for rows, near in zip(members, neighbours)]
        return float(np.concatenate(shares).mean())

    shuffled = []
    for _ in range(permutations):
        permuted = codes.copy()
        for rows in members:
            permuted[rows] = codes[rng.permutation(rows)]
        shuffled.append(agreement(permuted))
    return Clustering(label=label, value=agreement(codes), chance=float(np.mean(shuffled)),
                      chance_sd=float(np.std(shuffled, ddof=1)) if permutations > 1 else 0.0, k=k,
                      permutations=permutations)
