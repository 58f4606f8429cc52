"""Dataset readers on fixture trees written here, on bad inputs, and on a few real files."""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from karyopipe.data import (
    UnknownFormatError,
    detect_format,
    read_coco,
    read_crops,
    read_dataset,
    read_labelme,
    read_voc,
    read_yolo,
    write_coco,
)
from karyopipe.data.boxes import read_yolo_names
from karyopipe.data.crops import cell_from_filename

cv2 = pytest.importorskip("cv2")
H, W = 60, 80


def spread(dark_on_light=False) -> np.ndarray:
    """A tiny fluorescence-style spread: two bright rods on a dark background."""
    image = np.full((H, W), 20, np.uint8)
    image[10:40, 10:16] = 220
    image[20:50, 50:58] = 200
    return 255 - image if dark_on_light else image


def png_b64(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", image)
    return base64.b64encode(buf.tobytes()).decode("ascii")


RECT_A = [[10, 10], [16, 10], [16, 40], [10, 40]]
RECT_B = [[50, 20], [58, 20], [58, 50], [50, 50]]


def labelme_doc(shapes, embed=True, image_path="img.png"):
    doc = {"version": "5.0", "flags": {}, "shapes": shapes, "imagePath": image_path,
           "imageHeight": H, "imageWidth": W, "imageData": png_b64(spread()) if embed else None}
    return doc


def shape(label, points, shape_type="polygon"):
    return {"label": label, "points": points, "shape_type": shape_type, "group_id": None, "flags": {}}


# ----------------------------------------------------------------------------- labelme

@pytest.fixture()
def labelme_dir(tmp_path):
    root = tmp_path / "lm"
    root.mkdir()
    good = [shape("chr", RECT_A), shape("7", RECT_B), shape("X", RECT_A), shape("nucleus", RECT_B),
            shape("debris", RECT_A), shape("chr", [[1, 1], [5, 5]]), shape("chr", [[100, 100], [120, 100], [120, 130]]),
            shape("mystery", RECT_A), shape("chr", [[-5, 10], [16, 10], [16, 40]]), shape("chr", [[10, 10], [20, 30]], "rectangle"),
            shape("chr", [[3, 3]], "point")]
    (root / "original_12a.json").write_text(json.dumps(labelme_doc(good)))
    (root / "original_12b.json").write_text(json.dumps(labelme_doc([shape("chr", RECT_A)])))
    cv2.imwrite(str(root / "side.png"), spread())
    (root / "side.json").write_text(json.dumps(labelme_doc([shape("chr", RECT_B)], embed=False, image_path="side.png")))
    (root / "broken.json").write_text('{"shapes": [ {"label": ')
    (root / "lost.json").write_text(json.dumps(labelme_doc([], embed=False, image_path="nowhere.png")))
    return root


def test_labelme_reads_labels_categories_and_cells(labelme_dir):
    ds = read_labelme(labelme_dir)
    assert ds.format == "labelme" and detect_format(labelme_dir) == "labelme"
    by_id = {s.image_id: s for s in ds.samples}
    assert set(by_id) == {"original_12a", "original_12b", "side"}
    assert by_id["original_12a"].cell_id == by_id["original_12b"].cell_id == "12"
    a = by_id["original_12a"]
    kinds = [(i.label, i.category) for i in a.instances]
    assert kinds[:5] == [(None, "chromosome"), (7, "chromosome"), (23, "chromosome"), (None, "nucleus"), (None, "debris")]
    clipped = a.instances[5]
    assert clipped.extra.get("clipped") and clipped.polygon[:, 0].min() == 0
    assert a.instances[6].bbox == (10.0, 10.0, 20.0, 30.0) and a.instances[6].polygon is None
    assert len(a.instances) == 7
    image = a.load_image()
    assert image.shape == (H, W) and image[20, 12] == 220
    mask = a.instances[0].get_mask(image.shape)
    assert mask.sum() == 6 * 30 and mask[20, 12] and not mask[20, 17]
    assert by_id["side"].path.name == "side.png" and by_id["side"].load_image().shape == (H, W)


def test_labelme_problems_are_reported_not_raised(labelme_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="karyopipe.data"):
        ds = read_labelme(labelme_dir)
    reasons = "\n".join(str(p) for p in ds.problems)
    assert "broken.json: malformed JSON" in reasons
    assert "nowhere.png not found" in reasons
    assert "shape 5: polygon has 2 point(s), needs at least 3" in reasons
    assert "shape 6: polygon lies outside the 80x60 image" in reasons
    assert "shape 7: unknown chromosome label 'mystery'" in reasons
    assert "shape type 'point' is not supported" in reasons
    assert len(ds.problems) == 6 and len(caplog.records) == 6


def test_labelme_single_file_and_corrupt_embedded_image(tmp_path):
    doc = labelme_doc([shape("chr", RECT_A)])
    doc["imageData"] = base64.b64encode(b"garbage bytes").decode()
    path = tmp_path / "one.json"
    path.write_text(json.dumps(doc))
    ds = read_dataset(path)
    assert ds.format == "labelme" and len(ds) == 1
    from karyopipe.io import ImageReadError

    with pytest.raises(ImageReadError, match="one.json"):
        ds.samples[0].load_image()


# ----------------------------------------------------------------------------- COCO

def test_coco_round_trip_polygons_masks_and_boxes(labelme_dir, tmp_path):
    ds = read_labelme(labelme_dir)
    sample = next(s for s in ds.samples if s.image_id == "original_12a")
    mask = np.zeros((H, W), bool)
    mask[30:35, 30:45] = True
    from karyopipe.data import Instance

    sample.instances.append(Instance(mask=mask, label=24))
    out = tmp_path / "coco" / "ann.json"
    write_coco([sample], out, image_dir=tmp_path / "coco" / "images")
    assert (tmp_path / "coco" / "images" / "original_12a.png").is_file()
    back = read_coco(out)
    assert back.problems == [] and len(back) == 1
    got = back.samples[0]
    assert got.cell_id == "12" and got.load_image().shape == (H, W)
    assert [(i.label, i.category) for i in got.instances] == [(i.label, i.category) for i in sample.instances]
    assert np.allclose(got.instances[0].polygon, sample.instances[0].polygon, atol=0.01)
    assert got.instances[6].bbox == (10.0, 10.0, 20.0, 30.0)
    assert np.array_equal(got.instances[-1].get_mask((H, W)), mask)
    assert got.instances[-1].get_bbox() == (30.0, 30.0, 45.0, 35.0)
    with pytest.raises(ValueError, match="embedded"):
        write_coco([sample], tmp_path / "x.json")


def test_coco_reads_rle_multipart_unknown_categories_and_problems(tmp_path):
    from pycocotools import mask as mask_utils

    cv2.imwrite(str(tmp_path / "a.png"), spread())
    m = np.zeros((H, W), np.uint8, order="F")
    m[5:9, 5:9] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}, {"id": 2, "file_name": "gone.png", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "chromosome"}, {"id": 2, "name": "C7"}, {"id": 3, "name": "phenotype-a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle, "bbox": [5, 5, 4, 4], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [1, 1, 3, 3], "iscrowd": 0,
             "segmentation": [[10, 10, 16, 10, 16, 40, 10, 40], [50, 20, 58, 20, 58, 50, 50, 50]]},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [50, 20, 8, 30], "segmentation": [], "iscrowd": 0},
            {"id": 4, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]},
            {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 2, 2]], "bbox": [1, 1, 1, 1]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    assert detect_format(tmp_path) == "coco"
    ds = read_dataset(tmp_path)
    assert len(ds) == 1
    a, b, c = ds.samples[0].instances
    assert a.get_mask((H, W)).sum() == 16 and a.label is None
    assert b.label == 7 and b.polygon is None and b.get_mask((H, W)).sum() > 400
    assert c.label is None and c.extra["coco_category"] == "phenotype-a" and c.bbox == (50.0, 20.0, 58.0, 50.0)
    reasons = [p.reason for p in ds.problems]
    assert any("not found" in r for r in reasons) and any("category_id 9" in r for r in reasons)
    assert any("fewer than 3 points" in r for r in reasons)
    (tmp_path / "ann.json").write_text("{not json")
    bad = read_coco(tmp_path / "ann.json")
    assert len(bad) == 0 and "malformed JSON" in bad.problems[0].reason


# ----------------------------------------------------------------------------- VOC

VOC_XML = """<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>1</depth></size>
{objects}</annotation>"""
VOC_OBJ = "<object><name>{n}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"


def make_voc(root: Path, dark_on_light=True, image_dir="JEPG", ann_dir="annotations"):
    (root / image_dir).mkdir(parents=True)
    (root / ann_dir).mkdir()
    cv2.imwrite(str(root / image_dir / "s1.jpg"), spread(dark_on_light))
    objects = [VOC_OBJ.format(n=n, x0=x0, y0=y0, x1=x1, y1=y1) for n, (x0, y0, x1, y1) in
               [("A1", (9, 8, 18, 42)), ("C6", (49, 19, 60, 52)), ("B7", (1, 1, 5, 5)), ("Y", (5, 5, 4, 9))]]
    (root / ann_dir / "s1.xml").write_text(VOC_XML.format(name="s1.jpg", w=W, h=H, objects="\n".join(objects)))
    (root / ann_dir / "s2.xml").write_text("<annotation><filename>s2.jpg</filename")
    return root


def test_voc_boxes_labels_and_problems(tmp_path):
    root = make_voc(tmp_path / "voc")
    assert detect_format(root) == "voc"
    ds = read_voc(root)
    (sample,) = ds.samples
    assert [(i.label, i.bbox) for i in sample.instances] == [(1, (8.0, 7.0, 18.0, 42.0)), (6, (48.0, 18.0, 60.0, 52.0))]
    assert all(i.polygon is None and not i.pseudo_mask for i in sample.instances)
    reasons = " | ".join(str(p) for p in ds.problems)
    assert "object 2: unknown chromosome label 'B7'" in reasons
    assert "object 3: empty box" in reasons
    assert "s2.xml: malformed XML" in reasons


@pytest.mark.parametrize("dark_on_light", [True, False])
def test_voc_pseudo_masks_threshold_inside_each_box(tmp_path, dark_on_light):
    root = make_voc(tmp_path / "voc", dark_on_light, image_dir="JPEGImages", ann_dir="Annotations")
    ds = read_dataset(root, with_pseudo_masks=True)
    first, second = ds.samples[0].instances
    truth = np.zeros((H, W), bool)
    truth[10:40, 10:16] = True
    mask = first.get_mask((H, W))
    assert first.pseudo_mask and second.pseudo_mask
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.8, iou
    assert not mask[:, 30:].any()  # nothing outside its own box


# ----------------------------------------------------------------------------- YOLO

def make_yolo(root: Path, names="names: ['a', 'b', 'c']"):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "1.png"), spread(True))
    cv2.imwrite(str(root / "images" / "2.png"), spread(True))
    (root / "labels" / "1.txt").write_text(
        "2 0.1625 0.4166667 0.075 0.5\n0 0.675 0.5833333 0.1 0.5\n\n7 0.5 0.5 0.1 0.1\n0 0.5 oops 0.1 0.1\n1 0.5\n")
    (root / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    if names is not None:
        (root / "data.yaml").write_text(f"path: .\ntrain: data\nnc: 3\n{names}\n")
    return root


def test_yolo_boxes_names_and_problems(tmp_path):
    root = make_yolo(tmp_path / "yolo")
    assert detect_format(root) == "yolo"
    ds = read_yolo(root)
    one, two = ds.samples
    assert two.instances == [] and two.meta["annotated"] is False
    assert [i.label for i in one.instances] == [None, None]
    assert one.instances[0].extra == {"yolo_class": 2, "yolo_name": "c"}
    assert np.allclose(one.instances[0].bbox, (10, 10, 16, 40), atol=1e-3)
    reasons = " | ".join(str(p) for p in ds.problems)
    assert "line 4: class 7 is not in data.yaml names" in reasons
    assert "line 5: non-numeric field" in reasons
    assert "line 6: expected 'cls xc yc w h'" in reasons
    assert "orphan.txt: label file has no image" in reasons
    with_masks = read_yolo(root, with_pseudo_masks=True)
    assert with_masks.samples[0].instances[0].get_mask((H, W))[20, 12]


def test_yolo_class_names_from_yaml_or_none(tmp_path):
    root = make_yolo(tmp_path / "numbered", names="names:\n  - '1'\n  - X\n  - chr21")
    ds = read_yolo(root)
    assert [i.label for i in ds.samples[0].instances] == [21, 1]
    assert read_yolo_names(root / "data.yaml") == ["1", "X", "chr21"]
    (root / "data.yaml").write_text("names: {0: A1, 1: Y}\n")
    assert read_yolo_names(root / "data.yaml") == ["A1", "Y"]
    bare = make_yolo(tmp_path / "bare", names=None)
    ds = read_yolo(bare)
    assert [i.label for i in ds.samples[0].instances] == [None, None, None]  # no names: any class id is "chromosome"


# ----------------------------------------------------------------------------- crops

def crop(value=200) -> np.ndarray:
    image = np.zeros((20, 8), np.uint8)
    image[2:18, 2:6] = value
    return image


def test_bioimlab_crops(tmp_path):
    root = tmp_path / "crops"
    for cell in ("3", "12"):
        (root / cell).mkdir(parents=True)
        for name in ("1a", "1b", "23", "24"):
            Image.fromarray(crop()).save(root / cell / f"{cell} {name}.bmp")
    (root / "12" / "notes.txt").write_text("x")
    (root / "12" / "12 99a.bmp").write_bytes(b"")
    assert detect_format(root) == "crops-bioimlab"
    ds = read_dataset(root)
    assert ds.kind == "crops" and len(ds) == 8 and ds.cells == ["3", "12"]
    s = ds.samples[0]
    assert (s.cell_id, s.label, s.meta["homolog"], s.kind) == ("3", 1, "a", "crops")
    assert [x.label for x in ds.samples[:4]] == [1, 1, 23, 24]
    reasons = " | ".join(str(p) for p in ds.problems)
    assert "notes.txt: not an image file" in reasons and "12 99a.bmp: unknown chromosome label '99'" in reasons


def test_clase_crops_with_stray_class_folder(tmp_path):
    root = tmp_path / "g612"
    for cell in ("97000001.1.tiff", "97000002.5.tiff"):
        for k, copies in ((1, 2), (23, 1)):
            folder = root / cell / f"clase{k}"
            folder.mkdir(parents=True)
            for c in range(copies):
                cv2.imwrite(str(folder / f"clase{k}_{c}_{cell}"), 255 - crop())
    stray = root / "97000002.5.tiff" / "clase25"
    stray.mkdir()
    cv2.imwrite(str(stray / "clase25_0_97000002.5.tiff"), crop())
    assert detect_format(root) == "crops-clase"
    ds = read_crops(root)
    assert len(ds) == 6 and ds.cells == ["97000001.1", "97000002.5"]
    s = ds.samples[1]
    assert (s.label, s.meta["copy"], s.cell_id) == (1, 1, "97000001.1")
    (problem,) = ds.problems
    assert "clase25_0_97000002.5.tiff" in problem.path and "clase25" in problem.reason
    assert s.load_image().shape == (20, 8)


def test_datanew_tiffs_cells_from_names_and_bad_files(tmp_path):
    root = tmp_path / "DataNew"
    for k in (1, 2, 24):
        (root / str(k)).mkdir(parents=True)
        cv2.imwrite(str(root / str(k) / f"clase{k}_0_97001234.7.tiff"), crop())
        cv2.imwrite(str(root / str(k) / f"img{k}.tiff"), crop())
    # OpenCV writes float RGB TIFFs that PIL refuses; they must still load.
    cv2.imwrite(str(root / "2" / "float.tiff"), np.dstack([crop() / 255.0] * 3).astype(np.float32))
    (root / "2" / "empty.tiff").write_bytes(b"")
    (root / "2" / "text.tiff").write_text("not a tiff")
    (root / "2" / "readme.md").write_text("hi")
    assert detect_format(root) == "crops-datanew"
    ds = read_dataset(root)
    cells = {s.path.name: s.cell_id for s in ds.samples}
    assert cells["clase1_0_97001234.7.tiff"] == "97001234.7" and cells["img24.tiff"] == "24/img24"
    assert [p.path.endswith("readme.md") for p in ds.problems] == [True]
    from karyopipe.data.summary import summarize

    info = summarize(ds, progress=False)
    bad = {Path(p["path"]).name: p["reason"] for p in info["problems"]}
    assert set(bad) == {"readme.md", "empty.tiff", "text.tiff"}
    assert "empty file" in bad["empty.tiff"] and "not a readable image" in bad["text.tiff"]
    assert info["readable_images"] == len(ds) - 2 and "uint16 RGB" in info["image_types"]


def test_generic_crops_flat_and_nested(tmp_path):
    flat = tmp_path / "flat"
    for name in ("chr1", "chrX", "A3"):
        (flat / name).mkdir(parents=True)
        Image.fromarray(crop()).save(flat / name / "c.png")
    assert detect_format(flat) == "crops-generic"
    assert sorted(s.label for s in read_dataset(flat).samples) == [1, 3, 23]
    nested = tmp_path / "nested"
    for cell in ("cellA", "cellB"):
        for name in ("X", "7", "junk"):
            (nested / cell / name).mkdir(parents=True)
            Image.fromarray(crop()).save(nested / cell / name / "c.png")
    ds = read_dataset(nested)
    assert ds.format == "crops-generic" and len(ds) == 4 and ds.cells == ["cellA", "cellB"]
    assert len(ds.problems) == 2 and all("junk" in p.reason for p in ds.problems)


def test_cell_from_filename():
    assert cell_from_filename("clase7_1_97002023.12") == "97002023.12"
    assert cell_from_filename("12 7a") == "12"
    assert cell_from_filename("97002023.12_chr7") == "97002023.12"
    assert cell_from_filename("img_0042") is None


# ----------------------------------------------------------------------------- detection

def test_detect_format_errors_say_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        detect_format(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownFormatError, match="Looked for labelme/COCO"):
        detect_format(tmp_path / "empty")
    make_yolo(tmp_path / "parent" / "boxes")
    with pytest.raises(UnknownFormatError, match=r"boxes/ \(yolo\)"):
        read_dataset(tmp_path / "parent")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(UnknownFormatError, match="neither labelme"):
        detect_format(tmp_path / "x.json")
    cv2.imwrite(str(tmp_path / "one.png"), spread())
    ds = read_dataset(tmp_path / "one.png")
    assert ds.format == "images" and len(ds) == 1 and ds.samples[0].instances == []
    with pytest.raises(ValueError, match="unknown format"):
        read_dataset(tmp_path / "one.png", "tiff-stack")


# ----------------------------------------------------------------------------- real data

def test_real_bioimlab_metaphase_and_crops(shared_data):
    meta = shared_data / "bioimlab" / "metaphases"
    ds = read_labelme(meta / "original_1.json")
    (sample,) = ds.samples
    assert sample.cell_id == "1" and len(sample.instances) == 46 and ds.problems == []
    assert all(i.label is None and len(i.polygon) >= 3 for i in sample.instances)
    image = sample.load_image()
    assert image.shape == (576, 768, 3)
    crops = read_dataset(shared_data / "bioimlab" / "crops")
    assert crops.format == "crops-bioimlab" and len(crops) == 3680 and len(crops.cells) == 80
    assert len({s.label for s in crops.samples}) == 24 and crops.problems == []
    assert crops.samples[0].load_image().ndim in (2, 3)


def test_real_gband612_and_giemsa_boxes(shared_data):
    ds = read_dataset(shared_data / "gband612")
    assert ds.format == "crops-clase" and len(ds.cells) == 509
    assert [Path(p.path).parent.name for p in ds.problems] == ["clase25"]
    assert ds.samples[0].load_image().dtype == np.uint8
    boxes = read_dataset(shared_data / "giemsa_boxes")
    assert boxes.format == "yolo" and len(boxes) == 8 and boxes.problems == []
    assert sum(len(s.instances) for s in boxes.samples) == 465
    assert all(i.label is None and i.category == "chromosome" for s in boxes.samples for i in s.instances)
    spreads = read_dataset(shared_data / "gband_spreads")
    assert spreads.format == "images" and len(spreads) == 12


def test_coco_in_annotations_folder_is_not_mistaken_for_voc(labelme_dir, tmp_path):
    ds = read_labelme(labelme_dir)
    root = tmp_path / "cocoset"
    write_coco(ds.samples[:1], root / "annotations" / "train.json", image_dir=root / "images")
    assert detect_format(root) == "coco"
    back = read_dataset(root)
    assert len(back) == 1 and back.problems == [] and back.samples[0].load_image().shape == (H, W)
    write_coco(ds.samples[:1], root / "annotations" / "val.json", image_dir=root / "images")
    with pytest.raises(UnknownFormatError, match="2 COCO JSON files"):
        read_dataset(root)


def test_instance_mask_from_rle_extra():
    from pycocotools import mask as mask_utils

    from karyopipe.data import Instance

    m = np.zeros((H, W), np.uint8)
    m[3:9, 4:7] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    inst = Instance(extra={"rle": rle})
    assert np.array_equal(inst.get_mask((H, W)), m.astype(bool))
    assert inst.get_bbox() == (4.0, 3.0, 7.0, 9.0)
    with pytest.raises(ValueError, match="RLE mask"):
        inst.get_mask((H + 1, W))


def test_pseudo_mask_joins_sister_chromatids_and_drops_neighbour_corners():
    from karyopipe.data.pseudo import mask_to_polygon, pseudo_mask
    from karyopipe.data import Instance

    canonical = np.full((H, W), 0.1, np.float32)
    canonical[10:40, 20:24] = 0.9  # chromatid 1
    canonical[10:40, 30:34] = 0.9  # chromatid 2, 6 px apart
    canonical[10:14, 40:44] = 0.9  # corner of a neighbour at the box edge
    mask = pseudo_mask(canonical, (16, 6, 44, 44))
    assert mask[20, 21] and mask[20, 31] and not mask[11, 42]
    polygon = mask_to_polygon(mask)
    again = Instance(polygon=polygon).get_mask((H, W))
    assert again[20, 21] and again[20, 31] and np.array_equal(again, mask)


def test_samples_pickle_for_dataloader_workers(labelme_dir, tmp_path):
    import pickle

    ds = read_labelme(labelme_dir)
    for sample in ds.samples:
        clone = pickle.loads(pickle.dumps(sample))
        assert np.array_equal(clone.load_image(), sample.load_image())


def test_forced_wrong_format_says_what_it_looks_like(tmp_path):
    cv2.imwrite(str(tmp_path / "one.png"), spread())
    ds = read_dataset(tmp_path, "labelme")
    assert len(ds) == 0 and ds.problems[0].reason == "no labelme data found here; it looks like images"


def test_real_files_in_a_datanew_tree_and_truncated_copies(shared_data, tmp_path):
    import shutil

    from karyopipe.data.summary import summarize

    cell = next(p for p in sorted((shared_data / "gband612").iterdir()) if (p / "clase7").is_dir())
    root = tmp_path / "DataNew"
    for k in (7, 23):
        for src in sorted((cell / f"clase{k}").glob("*.tiff"))[:2]:
            (root / str(k)).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / str(k) / src.name)
    good = next((root / "7").glob("*.tiff"))
    (root / "7" / "cut.tiff").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    ds = read_dataset(root)
    assert ds.format == "crops-datanew"
    # ids from the clase-style names; a name without one is its own cell
    assert {s.cell_id for s in ds.samples} == {cell.name.removesuffix(".tiff"), "7/cut"}
    info = summarize(ds, progress=False)
    assert [Path(p["path"]).name for p in info["problems"]] == ["cut.tiff"]
    assert info["readable_images"] == len(ds) - 1


def test_score_pseudo_masks_against_outlines(labelme_dir, tmp_path):
    from karyopipe.data.pseudo import main as pseudo_main
    from karyopipe.data.pseudo import score_pseudo_masks

    root = tmp_path / "two"
    root.mkdir()
    (root / "s.json").write_text(json.dumps(labelme_doc([shape("chr", RECT_A), shape("chr", RECT_B)])))
    scores = score_pseudo_masks(read_labelme(root))
    assert scores["instances"] == 2 and scores["mean_iou"] > 0.9
    assert pseudo_main([str(root)]) == 0
    (root / "s.json").write_text(json.dumps(labelme_doc([shape("chr", [[10, 10], [20, 30]], "rectangle")])))
    with pytest.raises(ValueError, match="no annotated outlines"):
        score_pseudo_masks(read_labelme(root))


def test_yolo_split_subfolders(tmp_path):
    root = tmp_path / "y"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        cv2.imwrite(str(root / "images" / split / f"{split}1.jpg"), spread(True))
        (root / "labels" / split / f"{split}1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    ds = read_dataset(root)
    assert ds.format == "yolo" and [len(s.instances) for s in ds.samples] == [1, 1] and ds.problems == []
