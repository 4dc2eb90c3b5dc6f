"""Data set adapters (shared public sets and users' own folders/manifests) and leakage-safe splits."""

from .datasets import data_root, load_csv_manifest, load_deepapl, load_folder_tree, load_pbc, load_seg_wbc, load_txl
from .splits import dhash, group_kfold, near_duplicate_groups, split_groups

__all__ = [
    "data_root",
    "dhash",
    "group_kfold",
    "load_csv_manifest",
    "load_deepapl",
    "load_folder_tree",
    "load_pbc",
    "load_seg_wbc",
    "load_txl",
    "near_duplicate_groups",
    "split_groups",
]
