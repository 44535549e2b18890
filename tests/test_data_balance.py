"""PlayGen Algorithm 2 (balanced sampling) on synthetic clusters with a known answer."""

import math

import numpy as np
import pytest

from diffusers_yan.data.balance import (
    balance_dataset,
    balanced_cluster_counts,
    coverage_entropy,
    sample_from_clusters,
    transition_features,
)


def _rooms(sizes, centres, spread=5.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, spread, (n, 2)) for c, n in zip(centres, sizes)])


CENTRES = [(64, 64), (576, 64), (64, 576), (576, 576)]  # one room per 512-unit cell


def test_uniform_target_gives_equal_counts_per_room():
    xy = _rooms([700, 200, 80, 20], CENTRES)
    labels, counts = balanced_cluster_counts(xy, xy, k=4, num_samples=400, seed=0, cell_size=512)
    assert counts.sum() == 400
    assert sorted(counts.tolist()) == [100, 100, 100, 100]
    # each cluster is one room
    for i in range(4):
        assert len(np.unique(np.floor(xy[labels == i] / 512), axis=0)) == 1


def test_non_uniform_target_is_matched():
    xy = _rooms([500, 500], CENTRES[:2])
    labels, counts = balanced_cluster_counts(
        xy, xy, k=2, num_samples=300, target=np.array([2.0, 1.0]), seed=0, cell_size=512
    )
    # cells sorted by np.unique: (0, 0) first -> room 0 gets 2/3
    room_of_cluster = [int(np.floor(xy[labels == i][0, 0] / 512)) for i in range(2)]
    got = {room_of_cluster[i]: int(counts[i]) for i in range(2)}
    assert got == {0: 200, 1: 100}


def test_more_clusters_than_rooms_still_balances_rooms():
    xy = _rooms([900, 100], [(256, 256), (768, 256)], spread=30)  # rooms wider than one cluster
    labels, counts = balanced_cluster_counts(xy, xy, k=6, num_samples=200, seed=0, cell_size=512)
    chosen = sample_from_clusters(labels, counts, seed=0, replace=True)
    rooms = np.floor(xy[chosen, 0] / 512).astype(int)
    assert abs((rooms == 0).sum() - 100) <= 2 and abs((rooms == 1).sum() - 100) <= 2


def test_sample_from_clusters_without_replacement_caps_at_cluster_size():
    labels = np.array([0] * 10 + [1] * 3)
    chosen = sample_from_clusters(labels, np.array([5, 6]), seed=0, replace=False)
    assert len(chosen) == 8 and len(set(chosen.tolist())) == 8
    chosen = sample_from_clusters(labels, np.array([5, 6]), seed=0, replace=True)
    assert len(chosen) == 11 and (labels[chosen] == 1).sum() == 6


def test_coverage_entropy():
    xy = np.array([[0, 0], [200, 0], [0, 200], [200, 200]], dtype=float).repeat(5, axis=0)
    cov = coverage_entropy(xy, cell_size=128)
    assert cov["cells"] == 4 and math.isclose(cov["entropy_bits"], 2.0) and math.isclose(cov["normalized"], 1.0)
    skewed = np.concatenate([np.zeros((97, 2)), xy[::5][1:]])
    assert coverage_entropy(skewed, cell_size=128)["entropy_bits"] < 0.3


def test_transition_features():
    f = transition_features([{"x": 1.0, "y": 2.0, "angle": 90.0, "alive": True}])
    np.testing.assert_allclose(f, [[1.0, 2.0, 1.0, 0.0, 1.0]], atol=1e-12)


def test_balance_dataset_raises_entropy_and_keeps_segments_contiguous():
    datasets = pytest.importorskip("datasets")
    xy = _rooms([960, 160], CENTRES[:2], spread=3)
    n = len(xy)
    rows = {
        "episode_id": [0] * n,
        "segment_id": [0] * 960 + [1] * 160,
        "frame_index": list(range(n)),
        "state": [{"x": float(x), "y": float(y), "angle": 0.0, "alive": True} for x, y in xy],
    }
    ds = datasets.Dataset.from_dict(rows)
    balanced, report = balance_dataset(ds, k=2, window=16, num_samples=320, seed=0, cell_size=512)
    assert report["coverage_after"]["entropy_bits"] > report["coverage_before"]["entropy_bits"]
    assert math.isclose(report["coverage_after"]["entropy_bits"], 1.0, abs_tol=0.01)
    assert len(balanced) == 320
    # every new segment is a run of consecutive frames from one original segment
    fi = np.asarray(balanced["frame_index"])
    seg = np.asarray(balanced["segment_id"])
    for s in np.unique(seg):
        idx = fi[seg == s]
        assert np.all(np.diff(idx) == 1) and len(idx) == 16


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="empty"):
        balanced_cluster_counts(np.zeros((0, 5)), np.zeros((0, 2)))
