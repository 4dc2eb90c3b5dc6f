"""The unified LeukoMorph cell taxonomy and the mapping tables from every data set's labels.

A data set label maps to one class, or to a *set* of classes when the source did not sub-type
the cell (e.g. PBC's unsubtyped "immature granulocyte"): such partial labels are used in training
as "one of these" and are excluded from per-class metrics. A label absent from a table raises
:class:`~leukomorph.errors.LabelMappingError`; nothing is dropped silently. See docs/taxonomy.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import LabelMappingError

__all__ = [
    "ADDED_BY_REVIEWER",
    "ARTEFACT",
    "BLAST_EQUIVALENT",
    "CLASSES",
    "DATASET_MAPS",
    "FINDINGS",
    "LINEAGE",
    "NON_WBC",
    "PBC_GROUP",
    "WBC5_GROUP",
    "WBC5_LABELS",
    "PBC_LABELS",
    "REVIEW_LABELS",
    "map_label",
]

#: The class list, in model-output order.
CLASSES: tuple[str, ...] = (
    "segmented_neutrophil",
    "band_neutrophil",
    "eosinophil",
    "basophil",
    "lymphocyte",
    "variant_lymphocyte",
    "monocyte",
    "promonocyte",
    "blast",
    "promyelocyte",
    "myelocyte",
    "metamyelocyte",
    "erythroblast",
    "platelet",
    "plasma_cell",
    "smudge",
)

#: Lineage of each class (used by the patient-level suggestion and the report).
LINEAGE: Mapping[str, str] = {
    "segmented_neutrophil": "granulocytic",
    "band_neutrophil": "granulocytic",
    "eosinophil": "granulocytic",
    "basophil": "granulocytic",
    "lymphocyte": "lymphoid",
    "variant_lymphocyte": "lymphoid",
    "monocyte": "monocytic",
    "promonocyte": "monocytic",
    "blast": "undetermined",
    "promyelocyte": "granulocytic",
    "myelocyte": "granulocytic",
    "metamyelocyte": "granulocytic",
    "erythroblast": "erythroid",
    "platelet": "megakaryocytic",
    "plasma_cell": "lymphoid",
    "smudge": "none",
}

#: Classes counted as blasts or blast equivalents (WHO/ICC: promonocytes count as blast
#: equivalents; in APL the abnormal promyelocytes do too, handled by the APL rule).
BLAST_EQUIVALENT: frozenset[str] = frozenset({"blast", "promonocyte"})

#: Classes that are not nucleated white cells and are left out of the white-cell differential.
NON_WBC: frozenset[str] = frozenset({"platelet", "smudge", "erythroblast"})

#: A reviewer's label, not a model class: a detection or crop that is no countable cell (debris,
#: stain precipitate, a red cell or platelet clump taken for a white cell, a cell cut off by the
#: field's edge). It is counted in no class and no denominator, and never exported for training.
ARTEFACT = "artefact"

#: The labels a reviewer may give: every class, and :data:`ARTEFACT`.
REVIEW_LABELS: tuple[str, ...] = (*CLASSES, ARTEFACT)

#: Morphological findings a reviewer may record on a cell (review workstation), and how the report
#: names them: the features the APL suggestion asks to look for, and dysplasia.
FINDINGS: Mapping[str, str] = {
    "auer_rods": "Auer rods",
    "faggot_cell": "faggot cell (bundled Auer rods)",
    "bilobed_nucleus": "bilobed (butterfly) nucleus",
    "hypergranular": "hypergranular cytoplasm",
    "dysplasia": "dysplastic features",
}

#: The "prediction" of a cell a reviewer added (a second cell in a crop or detection box that holds
#: two overlapping cells): it has a label but no model output, and is never exported for training.
ADDED_BY_REVIEWER = "added_by_reviewer"

#: The eight PBC labels, and the PBC label each taxonomy class maps back to (None: no PBC analogue).
PBC_LABELS: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
PBC_GROUP: Mapping[str, str | None] = {
    "segmented_neutrophil": "neutrophil",
    "band_neutrophil": "neutrophil",
    "eosinophil": "eosinophil",
    "basophil": "basophil",
    "lymphocyte": "lymphocyte",
    "variant_lymphocyte": "lymphocyte",
    "monocyte": "monocyte",
    "promonocyte": "monocyte",
    "blast": None,
    "promyelocyte": "ig",
    "myelocyte": "ig",
    "metamyelocyte": "ig",
    "erythroblast": "erythroblast",
    "platelet": "platelet",
    "plasma_cell": "lymphocyte",
    "smudge": None,
}

_IG = ("promyelocyte", "myelocyte", "metamyelocyte")

#: Label tables, one per data set. Values are a class name or a tuple of class names (partial label).
DATASET_MAPS: Mapping[str, Mapping[str, str | tuple[str, ...]]] = {
    # PBC `sublabel` column (file-name prefix in the original release).
    "pbc": {
        "segmented_neutrophil": "segmented_neutrophil",
        "band_neutrophil": "band_neutrophil",
        "neutrophil": ("segmented_neutrophil", "band_neutrophil"),
        "eosinophil": "eosinophil",
        "basophil": "basophil",
        "lymphocyte": "lymphocyte",
        "monocyte": "monocyte",
        "promyelocyte": "promyelocyte",
        "myelocyte": "myelocyte",
        "metamyelocyte": "metamyelocyte",
        "immature_granulocyte": _IG,
        "erythroblast": "erythroblast",
        "platelet": "platelet",
    },
    # DeepAPL `cell_label` column (CellaVision sign-out classes).
    "deepapl": {
        "Segmented neutrophils": "segmented_neutrophil",
        "Band neutrophils": "band_neutrophil",
        "Eosinophils": "eosinophil",
        "Basophil": "basophil",
        "Lymphocyte": "lymphocyte",
        "Lymphocyte, variant": "variant_lymphocyte",
        "Prolymphocyte": "variant_lymphocyte",
        "Monocyte": "monocyte",
        "Promonocyte": "promonocyte",
        "Blast, no lineage spec": "blast",
        "Promyelocyte": "promyelocyte",
        "Myelocyte": "myelocyte",
        "Metamyelocyte": "metamyelocyte",
        "Erythroblast": "erythroblast",
        "Giant thrombocyte": "platelet",
        "Thrombocyte aggregation": "platelet",
        "Plasma cells": "plasma_cell",
        "Smudge cells": "smudge",
    },
    # seg_wbc `label` column (Zheng et al. 2018; five white-cell classes, no subtypes).
    "seg_wbc": {
        "neutrophil": ("segmented_neutrophil", "band_neutrophil"),
        "lymphocyte": "lymphocyte",
        "monocyte": "monocyte",
        "eosinophil": "eosinophil",
        "basophil": "basophil",
    },
}

#: The five mature white-cell classes used for cross-domain tests (seg_wbc and most public sets).
WBC5_LABELS: tuple[str, ...] = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
WBC5_GROUP: Mapping[str, str | None] = {
    "segmented_neutrophil": "neutrophil",
    "band_neutrophil": "neutrophil",
    "eosinophil": "eosinophil",
    "basophil": "basophil",
    "lymphocyte": "lymphocyte",
    "variant_lymphocyte": "lymphocyte",
    "monocyte": "monocyte",
}


def map_label(dataset: str, label: str) -> tuple[str, ...]:
    """Return the taxonomy class(es) a data set label stands for.

    A one-element tuple is an exact label; longer tuples are partial labels ("one of these").
    Raises :class:`LabelMappingError` for a label without an entry, and for an unknown data set.
    """
    table = DATASET_MAPS.get(dataset)
    if table is None or label not in table:
        raise LabelMappingError(dataset, label)
    value = table[label]
    return (value,) if isinstance(value, str) else tuple(value)
