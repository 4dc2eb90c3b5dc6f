"""Resolve `--datasets` items (shared set names, class-folder trees, CSV manifests) to records."""

from __future__ import annotations

import os
from pathlib import Path

from ..data import load_csv_manifest, load_deepapl, load_folder_tree, load_pbc
from ..errors import DataError
from ..records import LabelledImage

__all__ = ["load_sources"]

_SHARED = {"pbc": load_pbc, "deepapl": load_deepapl}


def load_sources(items: list[str], data_root: str | os.PathLike[str] | None = None) -> list[LabelledImage]:
    records: list[LabelledImage] = []
    for item in (i.strip() for i in items if i.strip()):
        if item in _SHARED:
            records += _SHARED[item](data_root)
        elif item.endswith(".csv"):
            records += load_csv_manifest(item)
        elif Path(item).is_dir():
            records += load_folder_tree(item)
        else:
            raise DataError(f"{item}: not a shared data set ({', '.join(_SHARED)}), a folder or a .csv manifest")
    if not records:
        raise DataError("no training records")
    return records
