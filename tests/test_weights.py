"""Weights files (karyopipe.weights): fp16 on disk, fp32 in memory, a model card beside each."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from karyopipe.weights import load_weights, save_weights, update_weights, weights_dir


def test_weights_are_stored_fp16_and_loaded_fp32_with_their_card(tmp_path):
    state = {"w": torch.randn(4, 3), "steps": torch.tensor([7])}
    path = save_weights(tmp_path / "m.pth", state, {"model": {"width": 3}}, {"data": "none"})
    raw = torch.load(path, weights_only=True)
    assert raw["state_dict"]["w"].dtype == torch.float16 and raw["state_dict"]["steps"].dtype == torch.int64
    loaded, config, card = load_weights(path)
    assert loaded["w"].dtype == torch.float32 and torch.allclose(loaded["w"], state["w"], atol=1e-2)
    assert config == {"model": {"width": 3}} and card["data"] == "none" and "date" in card
    assert "none" in path.with_suffix(".md").read_text()


def test_update_weights_adds_entries_and_keeps_the_tensors(tmp_path):
    path = save_weights(tmp_path / "m.pth", {"w": torch.randn(5)}, {"model": {"a": 1}}, {"data": "x"})
    before, _, _ = load_weights(path)
    update_weights(path, {"calibration": {"slope": -1.2}}, {"calibration": "fitted on training frames"})
    after, config, card = load_weights(path)
    assert torch.equal(before["w"], after["w"])
    assert config == {"model": {"a": 1}, "calibration": {"slope": -1.2}}
    assert card["data"] == "x" and card["calibration"] == "fitted on training frames"
    assert "fitted on training frames" in path.with_suffix(".md").read_text()


def test_an_interrupted_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    from karyopipe.weights import atomic_save

    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, path)

    def dies_half_way(obj, target):
        Path(target).write_bytes(b"trunc")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_bare_shipped_name_finds_the_weights_folder_from_anywhere(tmp_path, monkeypatch):
    from karyopipe.weights import weights_path

    shipped = tmp_path / "weights"
    shipped.mkdir()
    (shipped / "alternative.pth").write_bytes(b"x")
    monkeypatch.setenv("KARYOPIPE_WEIGHTS", str(shipped))
    monkeypatch.chdir(tmp_path)
    assert weights_path("alternative.pth", "default.pth") == shipped / "alternative.pth"
    assert weights_path(None, "default.pth") == shipped / "default.pth"
    # A path with a folder, or a file that is here, is taken as given.
    assert weights_path("elsewhere/alternative.pth", "default.pth") == Path("elsewhere/alternative.pth")
    (tmp_path / "alternative.pth").write_bytes(b"y")
    assert weights_path("alternative.pth", "default.pth") == Path("alternative.pth")
    assert weights_path("missing.pth", "default.pth") == Path("missing.pth")


@pytest.mark.parametrize("name", sorted(p.name for p in weights_dir().glob("*.pth")))
def test_each_shipped_weights_file_is_fp16_under_95_mb_with_a_model_card(name):
    from karyopipe.weights import MAX_FILE_BYTES, default_weights

    path = default_weights(name)
    assert path.stat().st_size < MAX_FILE_BYTES <= 95e6
    blob = torch.load(path, map_location="cpu", weights_only=True)
    floats = [t for t in blob["state_dict"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    card = path.with_suffix(".md").read_text()
    assert card.startswith(f"# Model card: `{name}`")
    for field in ("**data**", "**split**", "**metrics**", "**date**", "## Config"):
        assert field in card, f"{name}'s card has no {field}"
    # Short enough to read, and its config block is the file's config (an ensemble's members naming the
    # held-out cells they share with it instead of listing them again).
    from karyopipe.weights import card_config

    assert card.count("\n") < 200
    block = card.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(block) == card_config(blob["config"])


def test_a_model_card_is_refreshed_without_touching_the_weights(tmp_path):
    from karyopipe.weights import refresh_model_card

    path = save_weights(tmp_path / "m.pth", torch.nn.Linear(2, 1).state_dict(),
                        config={"cells": [str(i) for i in range(50)]}, card={"data": "d", "limitations": "old"})
    before = path.read_bytes()
    card = refresh_model_card(path, {"limitations": "mended"})
    text = card.read_text()
    assert "- **limitations**: mended" in text and "old" not in text
    assert '"cells": ["0", "1",' in text  # a list of plain values stays on one line
    assert path.read_bytes() == before


def test_an_ensembles_card_names_the_held_out_cells_once(tmp_path):
    cells = [f"cell/{i}" for i in range(40)]
    members = [{"preprocess": mode, "heldout_cells": cells, "size": [64, 32]} for mode in ("pca", "geometry")]
    path = save_weights(tmp_path / "e.pth", torch.nn.Linear(2, 1).state_dict(),
                        config={"heldout_cells": cells, "members": members}, card={"data": "d"})
    text = path.with_suffix(".md").read_text()
    assert text.count('"cell/39"') == 1 and text.count("as heldout_cells above (40 entries)") == 2
    assert '"size": [64, 32]' in text  # short lists are written out
    assert load_weights(path)[1]["members"][1]["heldout_cells"] == cells  # the file keeps them all


def test_the_default_segmenter_is_the_designs_resnet50_and_the_r18_stays_loadable():
    from karyopipe.segmentation.infer import Segmenter

    default = Segmenter.from_pretrained()
    assert default.config["model"]["backbone"] == "resnet50"
    fast = Segmenter.from_pretrained("mask_rcnn_karyotype_r18.pth")
    assert fast.config["model"]["backbone"] == "resnet18"
    # Each carries what was fitted after its training: outlines, junk calibration, its own count threshold.
    for segmenter in (default, fast):
        assert segmenter.outline_model is not None and segmenter.config.get("junk_calibration")
