"""Dataset resolution: one resolver for study files, notebooks and the CLI."""

import json

import pytest

from msnb import sources
from msnb.datasets import DATASETS


def test_data_root_and_explicit_specs(tmp_path):
    specs = sources.resolve_datasets(["3dmrms", "msseg2016_test"], tmp_path)
    assert specs["3dmrms"] == {"adapter": "3dmrms", "root": str(tmp_path / "3dmrms"), "options": {}}
    assert specs["msseg2016_test"] == {
        "adapter": "msseg2016_test",
        "root": str(tmp_path / "msseg2016"),
        "options": {},
    }
    own = sources.resolve_datasets(["mine"], specs={"mine": {"adapter": "folder", "root": "/x"}})
    assert own["mine"] == {"adapter": "folder", "root": "/x", "options": {}}
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        sources.resolve_datasets(["nope"], tmp_path)


def test_registry_folders_match_the_real_layouts():
    assert {n: d.folder for n, d in DATASETS.items()} == {
        "isbi2015": "isbi2015",
        "msseg2016_train": "msseg2016",
        "msseg2016_test": "msseg2016",
        "3dmrms": "3dmrms",
    }
    assert DATASETS["isbi2015"].consensus_fallback == "union"


def test_phantom_has_one_cache_key(tmp_path, monkeypatch):
    """A phantom spec, an empty data root and dataset_folder all name the same folder."""
    monkeypatch.setenv("MSNB_OUTPUTS", str(tmp_path))
    made = []

    def fake_generate(root, *, preset, seed, progress):
        made.append((root, preset, seed))
        root.mkdir(parents=True)
        (root / "phantom.json").write_text(json.dumps({"preset": preset}))

    monkeypatch.setattr(sources, "generate_phantom", fake_generate)
    root = tmp_path / "phantom" / "tiny-seed3"
    by_spec = sources.resolve_dataset("isbi2015", {"phantom": "tiny", "seed": 3})
    by_default = sources.resolve_dataset("isbi2015", data_root="", seed=3)
    folder = sources.dataset_folder("msseg2016_train", "", seed=3)
    assert (
        by_spec
        == by_default
        == {"adapter": "isbi2015", "root": str(root / "isbi2015"), "options": {}}
    )
    assert folder == root / "msseg2016"
    assert made == [(root, "tiny", 3)]  # generated once, then reused
    assert sources.dataset_folder("isbi2015", tmp_path / "real") == tmp_path / "real"
    with pytest.raises(ValueError, match="unknown phantom preset 'huge'"):
        sources.phantom_root("huge")
