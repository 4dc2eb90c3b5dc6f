import csv

import numpy as np
import pytest

from leukomorph import taxonomy
from leukomorph.data import load_csv_manifest, load_deepapl, load_folder_tree, load_pbc
from leukomorph.data.splits import dhash, group_kfold, near_duplicate_groups, split_groups
from leukomorph.errors import DataError, LabelMappingError


def test_every_class_has_lineage_and_pbc_entry():
    assert len(set(taxonomy.CLASSES)) == len(taxonomy.CLASSES) == 16
    assert set(taxonomy.LINEAGE) == set(taxonomy.CLASSES) == set(taxonomy.PBC_GROUP)
    for table in taxonomy.DATASET_MAPS.values():
        for value in table.values():
            for c in (value,) if isinstance(value, str) else value:
                assert c in taxonomy.CLASSES


def test_unmapped_label_is_an_error():
    with pytest.raises(LabelMappingError, match="Hairy cell"):
        taxonomy.map_label("deepapl", "Hairy cell")
    with pytest.raises(LabelMappingError):
        taxonomy.map_label("nosuchset", "Lymphocyte")
    assert taxonomy.map_label("pbc", "immature_granulocyte") == ("promyelocyte", "myelocyte", "metamyelocyte")


def test_folder_tree_and_csv(tmp_path, rgb_png):
    (tmp_path / "blast" / "P1").mkdir(parents=True)
    rgb_png("blast/P1/a.png")
    (tmp_path / "lymphocyte").mkdir()
    rgb_png("lymphocyte/b.png")
    recs = load_folder_tree(tmp_path)
    assert [(r.classes, r.patient_id) for r in recs] == [(("blast",), "P1"), (("lymphocyte",), None)]
    (tmp_path / "Lymphs").mkdir()
    rgb_png("Lymphs/c.png")
    with pytest.raises(LabelMappingError, match=r"Lymphs \(class folder\): label 'Lymphs' is not a taxonomy class"):
        load_folder_tree(tmp_path)
    m = tmp_path / "m.csv"
    m.write_text("path,label,patient_id\nblast/P1/a.png,blast,P1\n")
    (r,) = load_csv_manifest(m)
    assert r.path == str(tmp_path / "blast/P1/a.png") and r.patient_id == "P1"
    m.write_text("path,label\nblast/P1/a.png,blast\nblast/P1/a.png,Lympho\n")
    with pytest.raises(LabelMappingError, match="m.csv, line 3: label 'Lympho'.*use one of segmented_neutrophil"):
        load_csv_manifest(m)
    m.write_text("file,class\nx,y\n")
    with pytest.raises(DataError):
        load_csv_manifest(m)


def test_near_duplicates_grouped_and_never_split():
    rng = np.random.default_rng(0)
    base = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(30)]
    near = [np.clip(b.astype(int) + 2, 0, 255).astype(np.uint8) for b in base[:10]]
    hashes = [dhash(x) for x in base + near]
    groups = near_duplicate_groups(hashes, max_distance=4)
    for i in range(10):
        assert groups[i] == groups[30 + i]
    assert len(np.unique(groups)) >= 25
    test = split_groups(groups, 0.3, seed=1)
    for g in np.unique(groups):
        assert len(set(test[groups == g])) == 1
    folds = group_kfold(groups, 3)
    assert sum(f.sum() for f in folds) == len(groups)


def test_patient_keys_merge_groups():
    groups = near_duplicate_groups([0, 2**63, 12345, 2**40], max_distance=0, keys=["A", "A", None, "B"])
    assert groups[0] == groups[1] and len(np.unique(groups)) == 3


@pytest.mark.data
def test_all_shared_labels_map(shared_data):
    pbc = load_pbc(shared_data)
    apl = load_deepapl(shared_data)
    assert len(pbc) > 10_000 and len(apl) > 10_000
    assert all(r.patient_id for r in apl)
    with open(shared_data / "deepapl" / "manifest.csv", newline="") as fh:
        labelled = sum(1 for row in csv.DictReader(fh) if row["cell_label"].strip())
    assert labelled == len(apl)  # nothing labelled was dropped


def test_user_labels_in_cellavision_or_pbc_names_map_to_the_taxonomy(tmp_path, rgb_png):
    (tmp_path / "Segmented neutrophils" / "P1").mkdir(parents=True)
    rgb_png("Segmented neutrophils/P1/a.png")
    (tmp_path / "Blast, no lineage spec").mkdir()
    rgb_png("Blast, no lineage spec/b.png")
    recs = load_folder_tree(tmp_path, names="cellavision")
    assert [(r.classes, r.patient_id) for r in recs] == [(("blast",), None), (("segmented_neutrophil",), "P1")]
    with pytest.raises(LabelMappingError):  # not taxonomy names
        load_folder_tree(tmp_path)
    m = tmp_path / "m.csv"
    m.write_text("path,label\nx.png,neutrophil\n")
    assert load_csv_manifest(m, names="pbc")[0].classes == ("segmented_neutrophil", "band_neutrophil")
    m.write_text("path,label\nx.png,neutrophil\ny.png,Neutrophil\n")
    with pytest.raises(LabelMappingError, match="m.csv, line 3: label 'Neutrophil' is not a pbc class name"):
        load_csv_manifest(m, names="pbc")
    with pytest.raises(DataError, match="unknown label vocabulary"):
        load_csv_manifest(m, names="sysmex")
