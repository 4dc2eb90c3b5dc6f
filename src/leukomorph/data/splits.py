"""Leakage-safe splits: patients and near-duplicate images always stay on one side.

Near-duplicates are found with a 64-bit difference hash (dHash) of the grayscale crop; two
images whose hashes differ in at most ``max_distance`` bits are joined into one group, and
groups are closed transitively (union-find). Groups are then merged with patient ids, so a
near-duplicate pair across two patients also puts both patients on one side.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["dhash", "group_kfold", "near_duplicate_groups", "split_groups"]


def dhash(rgb: np.ndarray) -> int:
    """64-bit difference hash of an RGB uint8 image."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        p = self.parent
        root = i
        while p[root] != root:
            root = p[root]
        while p[i] != root:
            p[i], i = root, p[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_groups(
    hashes: Sequence[int], max_distance: int = 4, keys: Sequence[str | None] | None = None
) -> np.ndarray:
    """Group ids (int array) joining near-duplicate hashes and, if given, equal non-empty keys."""
    h = np.asarray([np.uint64(x) for x in hashes], dtype=np.uint64)
    n = len(h)
    uf = _UnionFind(n)
    chunk = 512
    for start in range(0, n, chunk):
        block = h[start : start + chunk]
        dist = np.bitwise_count(block[:, None] ^ h[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        for i, j in zip(ii + start, jj, strict=True):
            if j > i:
                uf.union(int(i), int(j))
    if keys is not None:
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k:
                if k in first:
                    uf.union(first[k], i)
                else:
                    first[k] = i
    roots = np.array([uf.find(i) for i in range(n)])
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def split_groups(
    groups: np.ndarray, test_fraction: float, seed: int = 0, strata: Sequence[str] | None = None
) -> np.ndarray:
    """Boolean mask of test items: whole groups, about ``test_fraction`` of items per stratum.

    ``strata`` (one value per item, e.g. data set name) keeps each stratum's share separately.
    """
    groups = np.asarray(groups)
    strata_arr = np.asarray(strata if strata is not None else [""] * len(groups))
    rng = np.random.default_rng(seed)
    test = np.zeros(len(groups), dtype=bool)
    for s in np.unique(strata_arr):
        idx = np.nonzero(strata_arr == s)[0]
        ug = np.unique(groups[idx])
        rng.shuffle(ug)
        target = test_fraction * len(idx)
        taken = 0
        chosen = []
        sizes = {g: c for g, c in zip(*np.unique(groups[idx], return_counts=True), strict=True)}
        for g in ug:
            if taken >= target:
                break
            chosen.append(g)
            taken += sizes[g]
        test[idx[np.isin(groups[idx], chosen)]] = True
    return test


def group_kfold(groups: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """k boolean masks (one per fold, True = validation) partitioning the groups."""
    groups = np.asarray(groups)
    ug = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(ug)
    fold_of = {g: i % k for i, g in enumerate(ug)}
    f = np.array([fold_of[g] for g in groups])
    return [f == i for i in range(k)]
