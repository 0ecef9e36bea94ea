"""The map of the feature space (featx.report.feature_map): on synth data, whose subjects each have their own stain
tint, cells cluster by subject far beyond shuffled subject labels; features with no subject structure do not."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from featx.data.synth import synthesize
from featx.errors import FeatxError
from featx.extract import extract
from featx.report.feature_map import MapStep, feature_map, map_arrays, neighbour_agreement

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 20 subjects x 4 cells: more subjects than the session's tiny tree (8), so that the permutation sd is small
# enough for "far above chance" to be measured, not hoped for
SYNTH = dict(subjects_all=10, subjects_hem=10, cells_per_subject=4, prelim_subjects_all=0, prelim_subjects_hem=0,
             final_cells=0, image_size=40)
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def synth_stores(tmp_path_factory) -> list[Path]:
    """Three synth trees (seeds 1-3: other subjects, tints and cells) through the cnn of random weights of the
    same seed, 32 px: 80 labelled cells of 20 subjects each."""
    folder = tmp_path_factory.mktemp("map_stores")
    stores = []
    for seed in SEEDS:
        synthesize(folder / f"data{seed}", seed=seed, **SYNTH)
        stores.append(extract(folder / f"data{seed}", folder / f"cnn{seed}.h5", backbone="cnn", weights="none",
                              image_size=32, batch_size=16, workers=0, device="cpu", seed=seed))
    return stores


@pytest.mark.slow
def test_cells_cluster_by_subject_far_above_shuffled_subject_labels(synth_stores, cnn_stores):
    """The acceptance test. "Far": more than 5 sd of the shuffles above their mean on each of three stores of
    20 subjects (a shuffled labelling lies there with p < 1e-6 if the shuffles were normal; the values seen are
    6.6-9.8 sd), and more than 3 sd on each of the session's tiny stores (8 subjects of 3-4 cells: 3.3-5.0 sd seen)."""
    for store in synth_stores:
        fmap = feature_map(store, method="pca", permutations=200)
        subject = fmap.subject_clustering
        assert fmap.n_cells == 80 and fmap.n_subjects == 20 and subject.k == 3
        assert 0.06 < subject.chance < 0.10   # 3 of the other 39 cells of a class share a cell's subject
        assert subject.value > subject.chance + 5 * subject.chance_sd, (store, subject)
    for seed in (0, 1, 2):
        fmap = feature_map(cnn_stores(seed), method="pca", permutations=200)
        subject = fmap.subject_clustering
        assert fmap.n_cells == 30 and fmap.n_subjects == 8
        assert subject.value > subject.chance + 3 * subject.chance_sd, (seed, subject)


@pytest.mark.slow
def test_class_clustering_is_above_its_chance_on_the_store(cnn_store, synth_stores):
    for store in [cnn_store, *synth_stores]:
        by_class = feature_map(store, method="pca").class_clustering
        assert 0.4 < by_class.chance < 0.6       # two balanced classes
        assert by_class.value > by_class.chance + 4 * by_class.chance_sd, (store, by_class)


def _class_only(seed: int, subject_shift: float = 0.0):
    """80 rows of 20 subjects (10 per class, 4 cells each) in 40 dimensions: a class signal, and a subject signal
    only as large as ``subject_shift``."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], 40)
    subjects = np.array([f"s{i // 4}" for i in range(80)])
    X = rng.normal(size=(80, 40)) + 3.0 * y[:, None] * (np.arange(40) < 5)
    X += subject_shift * rng.normal(size=(20, 40))[np.arange(80) // 4]
    return X, y, subjects


def test_features_without_subject_structure_cluster_by_subject_at_chance():
    """The negative control: with features where only class matters the observed subject labels are one more
    shuffle, so each number lies within 3.5 sd of its chance and their mean over 8 seeds within 3 sd of the
    mean of 8 such (sd 1/sqrt(8)); the same features with a subject shift added are far above it."""
    sds = []
    for seed in range(8):
        X, y, subjects = _class_only(seed)
        fmap = map_arrays(X, y, subjects, classes=["all", "hem"], method="pca", seed=seed, permutations=200)
        sds.append(fmap.subject_clustering.sds_above)
        assert fmap.class_clustering.sds_above > 5
    assert max(abs(z) for z in sds) < 3.5, sds
    assert abs(np.mean(sds)) < 3 / np.sqrt(len(sds)), sds
    X, y, subjects = _class_only(0, subject_shift=1.0)
    assert map_arrays(X, y, subjects, classes=["all", "hem"], method="pca").subject_clustering.sds_above > 5


def test_neighbour_agreement_counts_neighbours_within_groups():
    # two tight pairs per group: every row's nearest neighbour within its group shares its label
    space = np.array([[0.0], [0.1], [5.0], [5.1], [0.05], [0.15], [5.05], [5.15]])
    labels = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    within = neighbour_agreement(space, labels, k=1, groups=groups, permutations=50)
    assert within.value == 1.0 and within.k == 1 and within.permutations == 50
    assert abs(within.chance - 1 / 3) < 0.15     # a row's one neighbour shares its label 1 time in 3 by chance
    # across groups the nearest neighbour of row 0 is row 4 (another label): agreement drops
    assert neighbour_agreement(space, labels, k=1, permutations=10).value < 1.0


@pytest.mark.slow
def test_embedding_is_n_by_2_and_the_same_for_a_seed(cnn_store):
    """t-SNE starts from the PCA (not from random points), so its map hardly depends on the seed; it must not
    change between two runs of one seed."""
    steps = []
    first = feature_map(cnn_store, method="tsne", seed=3, on_step=steps.append)
    again = feature_map(cnn_store, method="tsne", seed=3)
    assert first.embedding.shape == (30, 2) and first.method == "tsne" and first.tap == "fc"
    assert np.allclose(first.embedding, again.embedding, atol=1e-6)
    assert np.ptp(first.embedding, axis=0).min() > 1   # spread out, not collapsed onto a point
    assert first.class_clustering == again.class_clustering   # the numbers follow the seed too
    assert [s.name for s in steps] == ["read", "pca", "embed", "numbers"]
    assert all(isinstance(s, MapStep) and s.text for s in steps)
    assert first.pca_dims == 30 and first.n_subjects == 8 and list(first.classes) == ["all", "hem"]


def test_a_tap_is_mapped_by_name(cnn_store):
    pool5 = feature_map(cnn_store, tap="pool5", method="pca")
    assert pool5.tap == "pool5" and pool5.pca_dims == 30
    with pytest.raises(FeatxError, match=r"no tap 'fc9' in this store; it holds pool5, fc"):
        feature_map(cnn_store, tap="fc9", method="pca")


def test_fused_stores_and_taps_are_mapped_as_load_features_reads_them(cnn_stores):
    steps = []
    fused = feature_map([cnn_stores(0), cnn_stores(1)], tap=["pool5", "fc"], method="pca", on_step=steps.append)
    assert fused.tap == "pool5+fc+pool5+fc" and fused.n_cells == 30 and fused.pca_dims == 30
    assert fused.store == f"{cnn_stores(0)} + {cnn_stores(1)}"
    assert steps[0].text == f"reading {cnn_stores(0)} + {cnn_stores(1)} (tap pool5+fc)"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("umap") is None, reason="umap-learn is not installed")
def test_umap_maps_deterministically_and_auto_picks_it(cnn_store):
    first = feature_map(cnn_store, method="umap", seed=1)
    again = feature_map(cnn_store, method="auto", seed=1)
    other = feature_map(cnn_store, method="umap", seed=2)
    assert first.method == again.method == "umap" and first.embedding.shape == (30, 2)
    assert np.allclose(first.embedding, again.embedding, atol=1e-5)
    assert not np.allclose(first.embedding, other.embedding, atol=1e-2)   # UMAP starts from the seed's points


def test_umap_without_umap_learn_is_one_line_and_auto_falls_back_to_tsne(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a))
    X, y, subjects = _class_only(0)
    with pytest.raises(FeatxError) as err:
        map_arrays(X, y, subjects, classes=["all", "hem"], method="umap")
    assert "pip install umap-learn" in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("method='umap' needs the umap-learn package")
    from featx.report.feature_map import check_method

    assert check_method("auto") == "tsne"


def test_bad_arguments_are_one_line():
    X, y, subjects = _class_only(0)
    with pytest.raises(FeatxError, match=r"^method='mds': not a map method; choose one of auto, tsne, umap, pca$"):
        map_arrays(X, y, subjects, classes=["all", "hem"], method="mds")
    with pytest.raises(FeatxError, match=r"^the features: 9 labelled rows; a map needs at least 10$"):
        map_arrays(X[:9], y[:9], subjects[:9], classes=["all", "hem"], method="pca")
    with pytest.raises(FeatxError, match=r"every labelled row has one class \(all\)"):
        map_arrays(X[:20], y[:20], subjects[:20], classes=["all", "hem"], method="pca")


def test_rows_without_subjects_get_the_class_number_and_a_note():
    X, y, subjects = _class_only(0)
    subjects[:3] = ""
    fmap = map_arrays(X, y, subjects, classes=["all", "hem"], method="pca")
    assert fmap.subject_clustering is None and fmap.class_clustering.value > 0.8
    assert fmap.note.startswith("3 of 80 rows have no subject id") and fmap.n_subjects == 20
    assert map_arrays(X, y, None, classes=["all", "hem"], method="pca").note.startswith("80 of 80 rows")
