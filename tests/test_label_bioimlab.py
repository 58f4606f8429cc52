"""label-bioimlab: matching metaphase polygons to labelled crops, on a generated fixture and real data."""
from __future__ import annotations

import base64
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from karyopipe.data.label_bioimlab import describe, dihedral_ncc, label_metaphases, main, match_frame

# (class, length, band positions as fractions) - distinct lengths and band patterns.
CHROMS = [(1, 70, (0.2, 0.55)), (2, 62, (0.7,)), (5, 52, (0.3, 0.45, 0.8)), (9, 44, (0.5,)),
          (13, 38, (0.15, 0.8)), (17, 32, (0.6,)), (21, 24, ()), (23, 48, (0.25, 0.65))]
SIDE = 90


def _rod(length: int, bands) -> np.ndarray:
    rod = np.zeros((length + 8, 18), np.float32)
    rod[4:-4, 5:13] = 0.9
    rod[4:8, 5:13] = 0.7  # rounded-looking tip, different at both ends
    for b in bands:
        y = 4 + int(b * length)
        rod[y:y + 3, 5:13] = 0.4
    return cv2.GaussianBlur(rod, (0, 0), 0.8)


def _frame_and_crops(rotate_index: int = 3):
    """A 3x3-grid frame of rods at assorted angles, plus cut-out crops (one turned 90 degrees)."""
    frame = np.zeros((3 * SIDE, 3 * SIDE), np.float32)
    polygons, crops = [], []
    rng = np.random.default_rng(1)
    for i, (cls, length, bands) in enumerate(CHROMS):
        rod = _rod(length, bands)
        angle = float(rng.uniform(0, 180))
        h, w = rod.shape
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        rot[:, 2] += [SIDE / 2 - w / 2, SIDE / 2 - h / 2]
        patch = cv2.warpAffine(rod, rot, (SIDE, SIDE))
        oy, ox = (i // 3) * SIDE, (i % 3) * SIDE
        frame[oy:oy + SIDE, ox:ox + SIDE] = patch
        mask = (patch > 0.3).astype(np.uint8)
        contour = max(cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=cv2.contourArea)
        polygons.append((contour[:, 0, :] + [ox, oy]).astype(float))
        ys, xs = np.nonzero(mask)
        crop = np.where(mask, patch, 0)[ys.min() - 2:ys.max() + 3, xs.min() - 2:xs.max() + 3]
        if i == rotate_index:
            crop = np.rot90(crop)
        crops.append((cls, crop))
    return frame, polygons, crops


def test_match_frame_finds_every_crop_including_rotated():
    frame, polygons, crops = _frame_and_crops()
    h, w = frame.shape
    pdesc = []
    for poly in polygons:
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        pdesc.append(describe(frame, mask.astype(bool)))
    # Shuffle the crops so the answer is not the identity by accident.
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    cdesc = [describe(crops[k][1], crops[k][1] > 0.05) for k in order]
    labels = [crops[k][0] for k in order]
    matches = match_frame(pdesc, cdesc, labels)
    assert [m.label for m in matches] == [c[0] for c in CHROMS]
    assert sum(m.confident for m in matches) >= len(CHROMS) - 1
    assert matches[3].ncc > 0.8  # the crop turned 90 degrees


def test_dihedral_ncc_matches_a_crop_cut_by_quarter_turns_pixel_for_pixel():
    frame, polygons, crops = _frame_and_crops()
    rod = describe(crops[2][1], crops[2][1] > 0.05).raw
    other = describe(crops[7][1], crops[7][1] > 0.05).raw
    for view in (rod, np.rot90(rod), rod[::-1], np.rot90(rod, 3)[:, ::-1]):
        assert dihedral_ncc(np.ascontiguousarray(view), rod) > 0.99
    assert dihedral_ncc(rod, other) < 0.95  # another chromosome stays apart
    # scale: the first patch is resized to the second's pixel size before comparing
    big = cv2.resize(rod, (rod.shape[1] * 2, rod.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    assert dihedral_ncc(big, rod, scale=2.0) > 0.95 > dihedral_ncc(big, rod, scale=1.0)


def _write_bioimlab(root, frame, polygons, crops, crop_folder="7", decoy_folder=None):
    meta, crop_dir = root / "metaphases", root / "crops" / crop_folder
    meta.mkdir(parents=True)
    crop_dir.mkdir(parents=True)
    if decoy_folder:  # another cell's crops: other lengths and bands
        decoy = root / "crops" / decoy_folder
        decoy.mkdir(parents=True)
        for k, (cls, length, bands) in enumerate(CHROMS):
            rod = _rod(int(length * 0.6) + 10, tuple((b + 0.37) % 1 for b in bands) + (0.9 - 0.1 * k,))
            letter = "" if cls in (23, 24) else "a"
            Image.fromarray((np.clip(rod, 0, 1) * 255).astype(np.uint8)).save(decoy / f"{decoy_folder} {cls}{letter}.bmp")
    buf = io.BytesIO()
    rgb = np.repeat((frame * 255).astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(rgb).save(buf, format="PNG")
    shapes = [{"label": "chr", "points": p.tolist(), "shape_type": "polygon"} for p in polygons]
    (meta / "original_7.json").write_text(json.dumps({
        "shapes": shapes, "imagePath": "original_7.png", "imageData": base64.b64encode(buf.getvalue()).decode(),
        "imageHeight": frame.shape[0], "imageWidth": frame.shape[1]}))
    seen = {}
    for cls, crop in crops:
        letter = "" if cls in (23, 24) else "ab"[seen.get(cls, 0)]
        seen[cls] = seen.get(cls, 0) + 1
        Image.fromarray((crop * 255).astype(np.uint8)).save(crop_dir / f"{crop_folder} {cls}{letter}.bmp")


def test_cli_writes_coco_with_classes(tmp_path, capsys):
    frame, polygons, crops = _frame_and_crops()
    _write_bioimlab(tmp_path, frame, polygons, crops)
    out = tmp_path / "cache" / "labelled.json"
    assert main([str(tmp_path / "metaphases"), str(tmp_path / "crops"), "--out", str(out), "--no-progress"]) == 0
    coco = json.loads(out.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    got = sorted(names[a["category_id"]] for a in coco["annotations"])
    want = sorted("X" if c == 23 else str(c) for c, _, _ in CHROMS)
    assert got == want
    # The image records the cell's karyotype from its crops, for eval-e2e.
    from karyopipe.karyogram import karyotype_string
    counts = {}
    for c, _, _ in CHROMS:
        counts[c] = counts.get(c, 0) + 1
    assert coco["images"][0]["karyotype"] == karyotype_string(counts)
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["matched"] == len(CHROMS) and report["cells"]["7"]["unmatched"] == []
    assert "8 matched" in capsys.readouterr().out
    assert coco["images"][0]["crop_cell"] == "7"


def test_frame_finds_its_crop_folder_whatever_its_number(tmp_path):
    # BioImLab numbers crop folders on their own: frame original_7 is crop folder 9 here, beside a decoy 8.
    frame, polygons, crops = _frame_and_crops()
    _write_bioimlab(tmp_path, frame, polygons, crops, crop_folder="9", decoy_folder="8")
    samples, report = label_metaphases(tmp_path / "metaphases", tmp_path / "crops", progress=False)
    (sample,) = samples
    assert sample.cell_id == "7" and sample.meta["crop_cell"] == "9"
    assert sorted(inst.label for inst in sample.instances) == sorted(c for c, _, _ in CHROMS)
    entry = report["crop_cells"]["original_7.json"]
    assert entry["crop_cell"] == "9" and entry["ncc"] - entry["runner_up_ncc"] >= 0.02


def test_unclear_folder_is_settled_by_the_native_match_or_left_unlabelled(tmp_path, monkeypatch):
    from karyopipe.data import label_bioimlab

    frame, polygons, crops = _frame_and_crops()
    _write_bioimlab(tmp_path, frame, polygons, crops, crop_folder="9", decoy_folder="8")
    monkeypatch.setattr(label_bioimlab, "CELL_NCC", 1.01)  # the coarse grid never decides
    (sample,), report = label_metaphases(tmp_path / "metaphases", tmp_path / "crops", progress=False)
    assert sample.meta["crop_cell"] == "9"
    assert report["crop_cells"]["original_7.json"]["ncc"] >= label_bioimlab.FINE_CELL_NCC
    monkeypatch.setattr(label_bioimlab, "FINE_CELL_NCC", 1.01)  # nor does the native match
    (sample,), report = label_metaphases(tmp_path / "metaphases", tmp_path / "crops", progress=False)
    assert "crop_cell" not in sample.meta and not any(inst.label for inst in sample.instances)
    assert any("no crop folder clearly matches" in p for p in report["problems"])


def test_real_cell(shared_data):
    from karyopipe.data import read_dataset

    meta = read_dataset(shared_data / "bioimlab" / "metaphases")
    meta.samples = [s for s in meta.samples if s.cell_id == "1"][:1]
    crops = read_dataset(shared_data / "bioimlab" / "crops")
    crops.samples = [s for s in crops.samples if s.cell_id == "1"]
    if not meta.samples or not crops.samples:
        pytest.skip("BioImLab cell 1 not present")
    samples, report = label_metaphases(meta, crops, progress=False)
    # Every polygon of a 46-chromosome frame gets a class; each crop is used at most once per frame.
    assert report["polygons"] >= 40 and report["matched_fraction"] > 0.9
    used = [inst.extra["match_crop"] for inst in samples[0].instances if inst.label]
    assert len(used) == len(set(used))
