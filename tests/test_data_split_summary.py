"""Cell-wise splits, the dataset summary and the ``karyopipe data-summary`` command."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from karyopipe.data import Dataset, Sample, read_dataset, split_by_cell
from karyopipe.data.split import assign_cells
from karyopipe.data.summary import format_summary, main, summarize


def samples_for(cells, per_cell=3):
    return [Sample(path=Path(f"{c}_{k}.png"), cell_id=c, kind="crops", label=1 + k) for c in cells for k in range(per_cell)]


def test_split_is_deterministic_disjoint_and_complete():
    cells = [str(k) for k in range(200)]
    train, val = split_by_cell(cells, val_fraction=0.2)
    assert split_by_cell(cells, val_fraction=0.2) == (train, val)
    assert set(train).isdisjoint(val) and sorted(train + val, key=int) == cells
    assert 25 <= len(val) <= 55  # binomial around 40
    other = split_by_cell(cells, val_fraction=0.2, seed=1)
    assert other != (train, val)
    a, b, c = split_by_cell(cells, (0.7, 0.15, 0.15))
    assert len(a) + len(b) + len(c) == 200 and len(a) > len(b) and not set(b) & set(c)


def test_adding_cells_moves_no_existing_cell():
    before = assign_cells([str(k) for k in range(100)])
    after = assign_cells([str(k) for k in range(300)])
    assert all(after[c] == side for c, side in before.items())


def test_split_samples_and_datasets_keep_cells_together():
    samples = samples_for([str(k) for k in range(40)])
    train, val = split_by_cell(samples, val_fraction=0.25)
    assert len(train) + len(val) == len(samples)
    assert {s.cell_id for s in train}.isdisjoint({s.cell_id for s in val})
    assert all(len([s for s in part if s.cell_id == c]) == 3 for part in (train, val) for c in {s.cell_id for s in part})
    ds = Dataset(root=Path("x"), format="crops-generic", kind="crops", samples=samples)
    dtrain, dval = split_by_cell(ds, (0.75, 0.25))
    assert isinstance(dtrain, Dataset) and dtrain.format == "crops-generic"
    assert [s.image_id for s in dtrain.samples] == [s.image_id for s in train]
    with pytest.raises(ValueError, match="not both"):
        split_by_cell(ds, (0.5, 0.5), val_fraction=0.2)
    with pytest.raises(ValueError, match="non-negative"):
        split_by_cell(ds, (1.0, -0.5))


def test_bioimlab_views_of_one_cell_split_together():
    from karyopipe.classes import bioimlab_cell_id

    stems = [f"original_{c}{v}" for c in range(30) for v in ("a", "b", "c", "")]
    samples = [Sample(path=Path(s + ".json"), cell_id=bioimlab_cell_id(s)) for s in stems]
    train, val = split_by_cell(samples, val_fraction=0.3)
    assert {s.cell_id for s in train}.isdisjoint({s.cell_id for s in val})
    # crops and metaphases of one cell land on the same side in separate calls
    crops_train, _ = split_by_cell([str(c) for c in range(30)], val_fraction=0.3)
    assert {s.cell_id for s in train} == set(crops_train)


def _tree(root: Path) -> Path:
    for k in ("1", "2", "X"):
        (root / k).mkdir(parents=True)
        for n in range(2):
            Image.fromarray(np.full((10, 6), 40 * (n + 1), np.uint8)).save(root / k / f"c{n}.png")
    (root / "2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def test_summary_counts_and_unreadable_files(tmp_path):
    ds = read_dataset(_tree(tmp_path / "crops"))
    info = summarize(ds, progress=False)
    assert info["format"] == "crops-generic" and info["kind"] == "crops"
    assert info["images"] == 7 and info["readable_images"] == 6 and info["cells"] == 7
    assert info["classes"] == {"1": 2, "2": 3, "X": 2}
    assert [Path(p["path"]).name for p in info["problems"]] == ["broken.png"]
    text = format_summary(info)
    assert "broken.png: not a readable image" in text and "1:2  2:3  X:2" in text
    json.dumps(info)  # JSON-ready


def test_cli_main_writes_json(tmp_path, capsys):
    root = _tree(tmp_path / "crops")
    out = tmp_path / "s.json"
    assert main([str(root), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "crops-generic" in printed and "problems    1" in printed
    assert json.loads(out.read_text())["readable_images"] == 6


@pytest.mark.parametrize("args, expect", [
    (["/no/such/dataset"], "/no/such/dataset: no such file or folder"),
    (["{tmp}"], "cannot tell the dataset format"),
    (["{tmp}", "--format", "voc"], "not a Pascal VOC layout"),
])
def test_cli_bad_path_is_one_line_without_traceback(tmp_path, args, expect):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    run = subprocess.run([sys.executable, "-m", "karyopipe", "data-summary", *args],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("karyopipe data-summary: error:") and expect in lines[0]


def test_summary_on_real_spreads(shared_data):
    info = summarize(read_dataset(shared_data / "giemsa_boxes"), progress=False)
    assert (info["images"], info["instances"], info["problems"]) == (8, 465, [])
    assert info["image_types"] == {"uint8 RGB": 8} and info["polarity"] == {"brightfield": 8}
