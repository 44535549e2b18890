"""Balanced data sampling (PlayGen, Yang et al. 2024, Algorithm 2), so a world model does not learn one corridor.

1. A feature vector per transition: position (x, y), heading (sin, cos of the angle), alive.
2. k-means (scikit-learn) into ``k`` clusters.
3. The characteristic of each cluster ``c_i``: the distribution of its members over position cells (cells of
   ``cell_size`` map units). The target ``y`` is the balanced characteristic: uniform over the visited cells by
   default, scaled to the wanted number of samples.
4. Solve ``b_1 c_1 + ... + b_k c_k = y`` with non-negative least squares (``scipy.optimize.nnls``) and round to
   integers ``b_i`` (largest remainder, so the total is kept).
5. Sample ``b_i`` transitions from cluster ``i``.

The position-coverage entropy (Shannon entropy, bits, of the cell histogram) is reported before and after.

Example:

```py
>>> import numpy as np
>>> from diffusers_yan.data.balance import balanced_cluster_counts
>>> rng = np.random.default_rng(0)
>>> # three rooms visited 600, 300 and 100 times; balancing asks for 100 of each
>>> xy = np.concatenate([rng.normal(c, 5, (n, 2)) for c, n in [((32, 32), 600), ((544, 32), 300), ((32, 544), 100)]])
>>> labels, counts = balanced_cluster_counts(xy, xy, k=3, num_samples=300, seed=0, cell_size=512)
>>> sorted(counts.tolist())
[100, 100, 100]
```
"""

from __future__ import annotations

import logging
import math

import numpy as np


logger = logging.getLogger(__name__)

# Position cell for the balancing target and the coverage entropy (map units). 128 units ~ a small room.
BALANCE_CELL_SIZE = 128.0


def transition_features(states: list[dict] | dict) -> np.ndarray:
    """Feature vector per transition: ``[x, y, sin(angle), cos(angle), alive]`` (float64 ``[N, 5]``).

    ``states`` is a list of state dicts or a dict of columns (as ``datasets`` returns them).
    """
    if isinstance(states, dict):
        cols = states
    else:
        cols = {k: [s[k] for s in states] for k in ("x", "y", "angle", "alive")}
    angle = np.radians(np.asarray(cols["angle"], dtype=np.float64))
    return np.stack(
        [
            np.asarray(cols["x"], dtype=np.float64),
            np.asarray(cols["y"], dtype=np.float64),
            np.sin(angle),
            np.cos(angle),
            np.asarray(cols["alive"], dtype=np.float64),
        ],
        axis=1,
    )


def position_cells(xy: np.ndarray, cell_size: float = BALANCE_CELL_SIZE) -> np.ndarray:
    """Integer cell index pairs ``[N, 2]`` of positions ``[N, 2]``."""
    return np.floor(np.asarray(xy, dtype=np.float64)[:, :2] / cell_size).astype(np.int64)


def coverage_entropy(xy: np.ndarray, cell_size: float = BALANCE_CELL_SIZE) -> dict:
    """Position coverage: Shannon entropy (bits) of the visit histogram over cells, and how many cells are visited.

    ``normalized`` is the entropy divided by ``log2(cells)``: 1.0 means every visited cell is visited equally often.
    """
    if len(xy) == 0:
        return {"entropy_bits": 0.0, "cells": 0, "normalized": 0.0, "samples": 0}
    _, counts = np.unique(position_cells(xy, cell_size), axis=0, return_counts=True)
    p = counts / counts.sum()
    h = float(-(p * np.log2(p)).sum())
    return {
        "entropy_bits": h,
        "cells": int(len(counts)),
        "normalized": h / math.log2(len(counts)) if len(counts) > 1 else 1.0,
        "samples": int(len(xy)),
    }


def _round_preserving_sum(x: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers close to ``x`` summing to ``total`` (largest-remainder rounding)."""
    x = np.clip(x, 0, None)
    floors = np.floor(x).astype(np.int64)
    remainder = int(total - floors.sum())
    if remainder > 0:
        order = np.argsort(-(x - floors), kind="stable")
        floors[order[:remainder]] += 1
    return floors


def balanced_cluster_counts(
    features: np.ndarray,
    xy: np.ndarray,
    k: int = 32,
    num_samples: int | None = None,
    target: np.ndarray | None = None,
    seed: int = 0,
    cell_size: float = BALANCE_CELL_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-4 of Algorithm 2: cluster, build the linear system, solve it with NNLS.

    Args:
        features: ``[N, d]`` transition features (standardised inside before k-means).
        xy: ``[N, 2]`` positions, binned into cells for the characteristics.
        k: number of clusters (capped at the number of distinct feature vectors).
        num_samples: size of the balanced set, ``sum(b_i)``; defaults to ``N``.
        target: the balanced characteristic ``y`` as weights over the sorted visited cells (``np.unique`` order);
            defaults to uniform over the visited cells.
        seed: k-means seed.

    Returns:
        ``(labels [N], counts [k])``: the cluster of each transition and how many to sample from each cluster.
    """
    from scipy.optimize import nnls
    from sklearn.cluster import KMeans

    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    if n == 0:
        raise ValueError("`features` is empty: nothing to balance.")
    num_samples = n if num_samples is None else int(num_samples)
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    k = int(min(k, len(np.unique(features, axis=0))))
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}.")

    # 2. k-means on standardised features (positions are in hundreds of units, the heading in [-1, 1])
    std = features.std(axis=0)
    z = (features - features.mean(axis=0)) / np.where(std > 0, std, 1.0)
    labels = KMeans(n_clusters=k, random_state=seed, n_init=4).fit_predict(z)

    # 3. characteristic c_i = distribution of cluster i over position cells; target y over the same cells
    _, cell_index = np.unique(position_cells(xy, cell_size), axis=0, return_inverse=True)
    cell_index = cell_index.reshape(-1)
    num_cells = int(cell_index.max()) + 1
    C = np.zeros((num_cells, k))
    np.add.at(C, (cell_index, labels), 1.0)
    C /= C.sum(axis=0, keepdims=True)
    if target is None:
        y = np.full(num_cells, 1.0 / num_cells)
    else:
        y = np.asarray(target, dtype=np.float64)
        if y.shape != (num_cells,) or (y < 0).any() or y.sum() <= 0:
            raise ValueError(
                f"`target` must be {num_cells} non-negative weights (one per visited cell), got {y.shape}."
            )
        y = y / y.sum()
    y = y * num_samples

    # 4. b >= 0 minimising ||C b - y||, then integers with the same total
    b, residual = nnls(C, y)
    counts = _round_preserving_sum(b * num_samples / max(b.sum(), 1e-12), num_samples)
    logger.info("balance: k=%d clusters over %d cells, nnls residual %.3f", k, num_cells, residual)
    return labels, counts


def sample_from_clusters(labels: np.ndarray, counts: np.ndarray, seed: int = 0, replace: bool = False) -> np.ndarray:
    """Step 5: draw ``counts[i]`` indices from cluster ``i`` (sorted).

    Without ``replace`` a cluster gives at most its size (the balanced set is a subset, no duplicated frames);
    with it, small clusters are oversampled to exactly ``counts[i]``.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for i, b in enumerate(counts):
        members = np.flatnonzero(labels == i)
        if b <= 0 or len(members) == 0:
            continue
        if b <= len(members):
            chosen.append(rng.choice(members, size=int(b), replace=False))
        elif replace:
            extra = rng.choice(members, size=int(b) - len(members), replace=True)
            chosen.append(np.concatenate([members, extra]))
        else:
            chosen.append(members)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def balance_dataset(
    dataset,
    k: int = 32,
    window: int = 16,
    num_samples: int | None = None,
    seed: int = 0,
    replace: bool = False,
    cell_size: float = BALANCE_CELL_SIZE,
):
    """Balance a collected ``datasets.Dataset`` (rows = frames) with Algorithm 2.

    The sampled unit is a window of ``window`` consecutive frames of one segment (not a single frame), so the
    result still holds clips a world model can train on; a window's features are those of its first frame.
    Every sampled window becomes its own segment (``segment_id`` is renumbered per episode).

    Returns:
        ``(balanced_dataset, report)`` with the coverage entropy before/after and the cluster counts.
    """
    if window < 1:
        raise ValueError(f"`window` must be >= 1, got {window}.")
    episode = np.asarray(dataset["episode_id"])
    segment = np.asarray(dataset["segment_id"])
    states = dataset["state"]
    feats = transition_features({k_: [s[k_] for s in states] for k_ in ("x", "y", "angle", "alive")})

    # windows of `window` frames inside each (episode, segment) run; a short tail run is its own window
    starts = []
    run_start = 0
    for i in range(1, len(episode) + 1):
        if i == len(episode) or episode[i] != episode[run_start] or segment[i] != segment[run_start]:
            starts += [(s, min(s + window, i)) for s in range(run_start, i, window)]
            run_start = i
    if not starts:
        raise ValueError("The dataset has no frames to balance.")
    first = np.array([s for s, _ in starts])
    unit_feats = feats[first]
    units = len(starts)
    num_units = units if num_samples is None else max(1, int(round(num_samples / window)))

    labels, counts = balanced_cluster_counts(unit_feats, unit_feats[:, :2], k, num_units, None, seed, cell_size)
    chosen = sample_from_clusters(labels, counts, seed=seed, replace=replace)

    rows, new_segments = [], []
    seg_counter: dict[int, int] = {}
    for u in chosen:
        s, e = starts[u]
        ep = int(episode[s])
        sid = seg_counter.get(ep, 0)
        seg_counter[ep] = sid + 1
        rows += list(range(s, e))
        new_segments += [sid] * (e - s)
    balanced = dataset.select(rows)
    balanced = balanced.remove_columns("segment_id").add_column("segment_id", new_segments)
    xy_before = feats[:, :2]
    xy_after = feats[np.asarray(rows, dtype=np.int64), :2]
    report = {
        "k": int(len(counts)),
        "window": window,
        "replace": replace,
        "cell_size": cell_size,
        "units_before": units,
        "units_after": int(len(chosen)),
        "frames_before": int(len(dataset)),
        "frames_after": int(len(rows)),
        "cluster_counts": [int(c) for c in counts],
        "coverage_before": coverage_entropy(xy_before, cell_size),
        "coverage_after": coverage_entropy(xy_after, cell_size),
    }
    logger.info(
        "balance: %d -> %d frames, coverage entropy %.3f -> %.3f bits (%d cells)",
        report["frames_before"],
        report["frames_after"],
        report["coverage_before"]["entropy_bits"],
        report["coverage_after"]["entropy_bits"],
        report["coverage_after"]["cells"],
    )
    return balanced, report
