"""Tests of karyopipe.segmentation: builders, training, inference merge, baseline, eval-seg."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from karyopipe.segmentation import build_maskrcnn
from karyopipe.segmentation.baseline import segment_watershed
from karyopipe.segmentation.dataset import SpreadTrainSet, collate, load_spreads, split_cells
from karyopipe.segmentation.infer import (
    InferenceSettings,
    Segmenter,
    _tiles,
    estimate_chromosome_width,
    refine_mask,
)

KEYS = {"segm_AP", "segm_AP50", "bbox_AP50", "images", "count_mae", "seconds_per_image", "recall50"}


def tube_image(seed: int, size: int = 128, n: int = 4):
    """Dark image with ``n`` bright straight tubes (width 7 px) and their polygons."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size), 0.05, np.float32)
    polygons = []
    for _ in range(n):
        for _attempt in range(50):
            cx, cy = rng.uniform(20, size - 20, 2)
            angle = rng.uniform(0, np.pi)
            half = rng.uniform(14, 26)
            d = np.array([np.cos(angle), np.sin(angle)]) * half
            nrm = np.array([-np.sin(angle), np.cos(angle)]) * 3.5
            poly = np.array([[cx, cy] - d - nrm, [cx, cy] + d - nrm, [cx, cy] + d + nrm, [cx, cy] - d + nrm])
            mask = np.zeros_like(image, np.uint8)
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
            if not (image[mask > 0] > 0.3).any():
                break
        image[mask > 0] = rng.uniform(0.6, 0.95)
        polygons.append(poly + 0.5)  # pixel-edge convention of labelme
    image = cv2.GaussianBlur(image, (0, 0), 0.8)
    return image, polygons


def write_labelme(folder: Path, name: str, image: np.ndarray, polygons) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((image * 255).astype(np.uint8)).convert("RGB").save(buf, format="PNG")
    blob = {
        "version": "5.0.1", "flags": {}, "imagePath": f"{name}.png",
        "imageData": base64.b64encode(buf.getvalue()).decode(),
        "imageHeight": image.shape[0], "imageWidth": image.shape[1],
        "shapes": [{"label": "chr", "points": p.tolist(), "shape_type": "polygon", "flags": {}} for p in polygons],
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(blob))
    return path


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "mobilenet_v3"])
def test_builders_give_maskrcnn_outputs(backbone):
    model = build_maskrcnn(backbone, box_detections_per_img=7).eval()
    assert model.backbone.body is not None
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1  # grey input, no ImageNet stem
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.backbone.modules())
    with torch.no_grad():
        out = model([torch.rand(1, 96, 128)])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}
    n = len(out["boxes"])
    assert n <= 7 and out["boxes"].shape == (n, 4) and out["masks"].shape == (n, 1, 96, 128)


def test_builder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="backbone"):
        build_maskrcnn("vgg16")
    with pytest.raises(ValueError, match="anchor"):
        build_maskrcnn("resnet18", anchor_sizes=((16,), (32,)))


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_tiny_training_loss_falls(tmp_path, precision):
    from karyopipe.segmentation.infer import network_precision

    torch.manual_seed(0)
    for k in range(4):
        image, polys = tube_image(k)
        write_labelme(tmp_path, f"original_{k + 1}", image, polys)
    samples = load_spreads(tmp_path).samples
    train = SpreadTrainSet(samples, crop_size=96, scale_range=(0.9, 1.1), length=4, seed=0)
    model = build_maskrcnn("resnet18", fpn_channels=64, anchor_sizes=((8, 12), (16, 24), (32, 48), (64, 96), (128, 192)),
                           rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, box_batch_size_per_image=32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = collate([train[i] for i in range(2)])  # one fixed batch: the model must overfit it
    losses = []
    for _ in range(20):
        with network_precision(model, precision):  # as train-seg --precision runs a step
            loss_dict = model(list(batch[0]), list(batch[1]))
        loss = sum(loss_dict.values())
        assert loss.dtype == torch.float32
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        losses.append({k: float(v.detach()) for k, v in loss_dict.items()} | {"total": float(loss.detach())})
    first = np.mean([l["total"] for l in losses[:4]])
    last = np.mean([l["total"] for l in losses[-4:]])
    assert last < 0.6 * first, (first, last)
    assert np.mean([l["loss_mask"] for l in losses[-4:]]) < np.mean([l["loss_mask"] for l in losses[:4]])


def _crops_through_workers(sample, seed):
    import torch

    from karyopipe.segmentation.dataset import seed_worker

    train = SpreadTrainSet([sample], crop_size=64, length=4, seed=0)
    loader = torch.utils.data.DataLoader(train, batch_size=1, num_workers=2, collate_fn=collate,
                                         worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(seed))
    return [images[0].numpy() for images, _ in loader]


def test_loader_workers_draw_their_own_crops_reproducibly():
    from karyopipe.data.model import Instance, Sample

    image, polys = tube_image(5, size=160, n=5)
    sample = Sample(path=Path("x.json"), cell_id="1", instances=[Instance(polygon=p) for p in polys],
                    loader=lambda: (image * 255).astype(np.uint8))
    crops = _crops_through_workers(sample, seed=3)
    # Workers 0 and 1 take items in turn; without their own streams they would repeat each other.
    assert not np.array_equal(crops[0], crops[1]) and not np.array_equal(crops[2], crops[3])
    assert all(np.array_equal(a, b) for a, b in zip(crops, _crops_through_workers(sample, seed=3)))


def test_the_training_set_draws_gamma_in_the_range_it_is_given(monkeypatch):
    import karyopipe.segmentation.transforms as transforms
    from karyopipe.data import Instance, Sample

    image, polys = tube_image(3, size=96)
    sample = Sample(path=Path("x.json"), cell_id="1", instances=[Instance(polygon=p) for p in polys],
                    loader=lambda: (image * 255).astype(np.uint8))
    widest = []
    draw = transforms.photometric
    monkeypatch.setattr(transforms, "photometric",
                        lambda im, rng, gamma_max: widest.append(gamma_max) or draw(im, rng, gamma_max))
    SpreadTrainSet([sample], crop_size=64, length=2, seed=0)[0]
    SpreadTrainSet([sample], crop_size=64, length=2, seed=0, gamma_max=2.0)[0]
    assert widest == [pytest.approx(transforms.GAMMA_MAX), 2.0]
    with pytest.raises(ValueError, match="gamma_max"):
        draw(image.astype(np.float32), np.random.default_rng(0), 0.5)


def test_augmented_masks_follow_the_image():
    image, polys = tube_image(3, size=160, n=5)
    from karyopipe.data.model import Instance, Sample

    sample = Sample(path=Path("x.json"), cell_id="1", instances=[Instance(polygon=p) for p in polys],
                    loader=lambda: (image * 255).astype(np.uint8))
    train = SpreadTrainSet([sample], crop_size=96, length=6, seed=1)
    for k in range(6):
        img, target = train[k]
        assert img.shape == (1, 96, 96)
        masks = target["masks"].numpy().astype(bool)
        assert len(masks) == len(target["boxes"]) == len(target["labels"])
        if len(masks):
            union = masks.any(axis=0)
            # Inverted-polarity crops aside, masked pixels are the bright ones.
            inside, outside = img[0].numpy()[union].mean(), img[0].numpy()[~union].mean()
            assert abs(inside - outside) > 0.2


def test_copy_paste_puts_whole_chromosomes_against_others():
    from scipy import ndimage as ndi

    from karyopipe.segmentation.transforms import cut_instances, paste_instances, prepare_polygons

    from karyopipe.data.model import Instance

    image, polys = tube_image(3, size=160, n=5)
    donors = cut_instances(image, prepare_polygons([Instance(polygon=p) for p in polys], image.shape))
    assert len(donors) == 5 and all(patch.shape == mask.shape and mask.any() for patch, mask in donors)
    crop = np.full((128, 128), 0.05, np.float32)
    crop[60:68, 30:90] = 0.8
    first = (crop > 0.5).astype(np.uint8)
    out, masks = paste_instances(crop, [first], donors, np.random.default_rng(0), n=4, touching=1.0, crossing=0.0)
    assert len(masks) >= 4 and out is not crop and crop.max() == np.float32(0.8)  # input left alone
    for k in range(1, len(masks)):
        new, before = masks[k].astype(bool), np.any(masks[:k], axis=0)
        assert (new & before).sum() <= 0.03 * new.sum()  # every annotated mask stays whole
        assert (new & ndi.binary_dilation(before, iterations=2)).any()  # touching one already there
        assert out[new].mean() > 0.4  # the pasted chromosome is bright where its mask says
    # crossing: both masks keep the shared pixels, which are brighter than either chromosome alone
    dim = np.where(first > 0, 0.4, 0.05).astype(np.float32)
    out, masks = paste_instances(dim, [first], donors, np.random.default_rng(1), n=3, touching=0.0, crossing=1.0)
    assert len(masks) >= 2
    for k in range(1, len(masks)):
        new, before = masks[k].astype(bool), np.any(masks[:k], axis=0)
        assert 0.05 * new.sum() <= (new & before).sum() <= 0.4 * new.sum()
    shared = masks[1].astype(bool) & first.astype(bool)
    assert out[shared].mean() > dim[shared].mean() + 0.2


def test_copy_paste_in_the_training_set_adds_instances():
    from karyopipe.data.model import Instance, Sample

    image, polys = tube_image(3, size=160, n=5)
    sample = Sample(path=Path("x.json"), cell_id="1", instances=[Instance(polygon=p) for p in polys],
                    loader=lambda: (image * 255).astype(np.uint8))
    plain = SpreadTrainSet([sample], crop_size=128, length=4, seed=1)
    pasted = SpreadTrainSet([sample], crop_size=128, length=4, seed=1, copy_paste=1.0, max_paste=3)
    assert len(pasted.donors) == 5 and not plain.donors
    counts = [(len(plain[k][1]["masks"]), len(pasted[k][1]["masks"])) for k in range(4)]
    assert sum(b for _, b in counts) > sum(a for a, _ in counts)


def test_split_is_by_cell_and_deterministic():
    cells = [str(k) for k in range(1, 41)]
    train, val = split_cells(cells)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(cells)
    assert 2 <= len(val) <= 16  # hash split: 20 % on average
    assert split_cells(list(reversed(cells))) == (train, val)
    assert set(split_cells(cells + ["99"])[1]) - {"99"} <= set(val) | {"99"}


def test_labelme_letters_share_a_cell(tmp_path):
    image, polys = tube_image(0)
    for name in ("original_12a", "original_12b", "original_13"):
        write_labelme(tmp_path, name, image, polys)
    dataset = load_spreads(tmp_path)
    assert [s.cell_id for s in dataset.samples] == ["12", "12", "13"]
    assert dataset.samples[0].load_image().shape[:2] == (128, 128)


def test_watershed_separates_touching_blobs():
    yy, xx = np.mgrid[:80, :120]
    image = np.zeros((80, 120), np.float32)
    image[(yy - 40) ** 2 + (xx - 42) ** 2 < 16 ** 2] = 0.9
    image[(yy - 40) ** 2 + (xx - 72) ** 2 < 16 ** 2] = 0.9  # overlapping discs: one blob with a neck
    from scipy import ndimage as ndi

    assert ndi.label(image > 0.5)[1] == 1
    found = segment_watershed(image, width=10, max_thickness_widths=5)
    assert len(found) == 2
    centres = sorted(np.argwhere(i.mask).mean(axis=0)[1] for i in found)
    assert abs(centres[0] - 42) < 5 and abs(centres[1] - 72) < 5


def test_watershed_finds_tubes_and_rejects_a_nucleus():
    image, polys = tube_image(5, size=160, n=4)
    yy, xx = np.mgrid[:160, :160]
    image[(yy - 20) ** 2 + (xx - 20) ** 2 < 15 ** 2] = 0.8  # a nucleus-like disc
    found = segment_watershed(image, width=7)
    assert len(found) >= 3  # long tubes may be split: the baseline over-segments
    assert all((image[i.mask] > 0.3).mean() > 0.9 for i in found)
    with_rejected = segment_watershed(image, width=7, keep_rejected=True)
    assert any(i.category == "nucleus" for i in with_rejected)


class ComponentDetector(torch.nn.Module):
    """Stand-in for Mask R-CNN: one detection per connected bright component of the tile."""

    def __init__(self):
        super().__init__()
        from types import SimpleNamespace

        self.roi_heads = SimpleNamespace(nms_thresh=0.5, score_thresh=0.05, detections_per_img=100)

    def forward(self, images):
        from scipy import ndimage as ndi

        image = images[0][0].numpy()
        labels, n = ndi.label(image > 0.5)
        masks = np.stack([labels == k for k in range(1, n + 1)]) if n else np.zeros((0,) + image.shape, bool)
        boxes = [[xs.start, ys.start, xs.stop, ys.stop] for ys, xs in ndi.find_objects(labels)]
        return [{"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.full((n,), 0.9),
                 "labels": torch.ones(n, dtype=torch.int64), "masks": torch.from_numpy(masks[:, None].astype(np.float32))}]


def test_tiling_merges_objects_cut_by_tiles():
    image = np.zeros((300, 420), np.float32)
    rects = [(10, 10, 40, 18), (100, 60, 108, 110), (120, 125, 170, 133), (250, 200, 258, 260), (30, 380, 80, 388)]
    for x0, y0, x1, y1 in [(c, r, c2, r2) for r, c, r2, c2 in rects]:
        image[y0:y1, x0:x1] = 0.9
    settings = InferenceSettings(rescale=False, tile_size=128, tile_overlap=64, min_area_widths2=0.5)
    found = Segmenter(ComponentDetector(), settings)(image)
    assert len(_tiles(300, 420, 128, 64)) > 4
    assert len(found) == len(rects)
    for inst in found:
        assert inst.mask.shape == image.shape and inst.mask.dtype == bool
        assert (image[inst.mask] > 0.5).all()
    assert sum(int(i.mask.sum()) for i in found) == int((image > 0.5).sum())


class SpeckleDetector(ComponentDetector):
    """Finds the components, plus a spurious speck at a fixed place of whatever view it is shown."""

    def forward(self, images):
        out = super().forward(images)[0]
        h, w = images[0].shape[-2:]
        speck = torch.zeros(1, 1, h, w)
        speck[..., 2:8, 2:8] = 1.0
        return [{"boxes": torch.cat([out["boxes"], torch.tensor([[2.0, 2.0, 8.0, 8.0]])]),
                 "scores": torch.cat([out["scores"], torch.tensor([0.95])]),
                 "labels": torch.cat([out["labels"], torch.ones(1, dtype=torch.int64)]),
                 "masks": torch.cat([out["masks"], speck])}]


@pytest.mark.parametrize("flips", [2, 4])
def test_flipped_views_vote_out_what_only_one_view_sees(flips):
    image, _ = tube_image(5, size=128)
    settings = InferenceSettings(rescale=False, refine=False, min_area_widths2=0.2)
    plain = Segmenter(SpeckleDetector(), settings)(image)
    voted = Segmenter(SpeckleDetector(), InferenceSettings(**{**settings.__dict__, "flips": flips}))(image)
    n_tubes = int(ndi_label_count(image > 0.5))
    # One view alone keeps the speck (score 0.95); each view puts it in another corner, so voting drops it.
    assert len(plain) == n_tubes + 1
    assert len(voted) == n_tubes
    for inst in voted:
        assert inst.score == pytest.approx(0.9)  # every view saw every tube, mapped back to one place
        assert (image[inst.mask] > 0.5).all()
    assert sum(int(i.mask.sum()) for i in voted) == int((image > 0.5).sum())


def test_vote_detections_needs_mask_overlap():
    from karyopipe.segmentation.infer import vote_detections

    def view(x0, score):
        return {"boxes": np.array([[x0, 5, x0 + 10, 15]], np.float32), "scores": np.array([score], np.float32),
                "crops": [(5, x0, np.ones((10, 10), np.float32))]}

    same = vote_detections([view(4, 0.8), view(5, 0.6)])
    assert len(same["scores"]) == 1 and same["scores"][0] == pytest.approx(0.7)
    assert same["boxes"][0].tolist() == [4, 5, 15, 15]
    apart = vote_detections([view(4, 0.8), view(25, 0.6)])
    assert sorted(apart["scores"].tolist()) == pytest.approx([0.3, 0.4])
    merged = same["crops"][0]
    assert merged[:2] == (5, 4) and merged[2].shape == (10, 11)
    assert merged[2][:, 0].tolist() == [0.5] * 10 and merged[2][:, 1:10].min() == 1.0
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "crops": []}
    assert vote_detections([empty, empty])["crops"] == []
    with pytest.raises(ValueError, match="flips"):
        from karyopipe.segmentation.infer import predict_views
        predict_views(ComponentDetector(), np.zeros((8, 8), np.float32), flips=3)


def ndi_label_count(binary) -> int:
    from scipy import ndimage as ndi

    return ndi.label(binary)[1]


def test_segmenter_rescales_wide_chromosomes():
    image, _ = tube_image(2, size=128)
    big = cv2.resize(image, (384, 384), interpolation=cv2.INTER_LINEAR)
    width_small, width_big = estimate_chromosome_width(image), estimate_chromosome_width(big)
    assert 2.0 < width_big / width_small < 4.5
    seg = Segmenter(ComponentDetector(), InferenceSettings(reference_width=width_small, min_area_widths2=0.5))
    assert 0.2 < seg.working_scale(big) < 0.5
    found = seg(big)
    assert found and all(i.mask.shape == big.shape for i in found)
    assert found[0].extra["chromosome_width"] == pytest.approx(width_big)
    # A width given in the settings replaces the measurement: told the chromosomes are thin, it does not
    # resize (and then takes them for nuclei, at the size it was told to expect).
    told = seg.configure(chromosome_width=width_small)
    detections = told.detect(big)
    assert told.working_scale(big) == 1.0 and detections
    assert all((d.scale, d.chromosome_width, d.category) == (1.0, width_small, "nucleus") for d in detections)
    with pytest.raises(ValueError, match="chromosome_width"):
        seg.configure(chromosome_width=-3)


def test_segmenter_zooms_without_changing_its_settings():
    image, _ = tube_image(2, size=128)
    width = estimate_chromosome_width(image)
    seg = Segmenter(ComponentDetector(), InferenceSettings(reference_width=width, min_area_widths2=0.5))
    before = seg.settings
    # At the training width the spread is looked at as it is, unless a zoom is asked for.
    assert seg.working_scale(image) == 1.0
    zoomed = seg.detect(image, zoom=1.25)
    assert zoomed and seg.settings is before
    assert all(d.scale == pytest.approx(1.25) and d.chromosome_width == pytest.approx(width / 1.25) for d in zoomed)
    assert all(d.prob.shape[0] + d.y0 <= image.shape[0] and d.prob.shape[1] + d.x0 <= image.shape[1] for d in zoomed)
    assert all(d.scale == 1.0 for d in seg.detect(image))
    # Without rescaling, a zoom is still a zoom.
    plain = seg.configure(rescale=False)
    assert all(d.scale == pytest.approx(1.5) for d in plain.detect(image, zoom=1.5))


def _tiny_weights(tmp_path) -> Path:
    from karyopipe.segmentation.infer import InferenceSettings, settings_dict
    from karyopipe.segmentation.model import model_config
    from karyopipe.weights import save_weights

    kwargs = {"backbone": "resnet18", "fpn_channels": 64}
    model = build_maskrcnn(**kwargs)
    return save_weights(tmp_path / "tiny.pth", model.state_dict(),
                        {"model": model_config(kwargs), "inference": settings_dict(InferenceSettings())},
                        card={"data": "none (untrained test model)"})


def test_from_pretrained_round_trip(tmp_path):
    path = _tiny_weights(tmp_path)
    seg = Segmenter.from_pretrained(path, score_thresh=0.0, rescale=False)
    image, _ = tube_image(1, size=96)
    found = seg(image)
    assert all(i.mask.shape == (96, 96) and 0.0 <= i.score <= 1.0 for i in found)
    with pytest.raises(TypeError, match="unknown"):
        Segmenter.from_pretrained(path, bogus=1)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        Segmenter.from_pretrained(tmp_path / "missing.pth")


def test_max_proposals_caps_the_box_head_and_gives_back_the_weights_own(tmp_path):
    path = _tiny_weights(tmp_path)
    own = Segmenter.from_pretrained(path, max_proposals=None).model.rpn.post_nms_top_n()
    seg = Segmenter.from_pretrained(path, max_proposals=40, rescale=False)
    assert 40 < own and seg.model.rpn.post_nms_top_n() == 40
    image, _ = tube_image(1, size=96)
    with torch.no_grad():
        images, _ = seg.model.transform([torch.from_numpy(image)[None]])
        proposals, _ = seg.model.rpn(images, seg.model.backbone(images.tensors))
    assert len(proposals[0]) <= 40
    assert seg.configure(max_proposals=None).model.rpn.post_nms_top_n() == own
    assert seg.configure(max_proposals=10 * own).model.rpn.post_nms_top_n() == own


def test_mask_nms_hands_back_only_the_parts_lying_inside_a_kept_detection():
    from karyopipe.segmentation.infer import mask_nms

    def box(y, x, h, w):
        return (y, x, np.ones((h, w), bool))

    masks = [box(10, 10, 4, 16),   # 0: kept, the best
             box(10, 10, 4, 15),   # 1: a duplicate of 0 by IoU
             box(10, 10, 4, 6),    # 2: a part lying inside 0: hidden
             box(8, 8, 8, 20),     # 3: covers 0, a merge of it and more: dropped, not hidden
             box(40, 40, 4, 8)]    # 4: elsewhere: kept
    scores = np.array([0.9, 0.8, 0.5, 0.4, 0.7])
    hidden = []
    assert mask_nms(masks, scores, 0.5, hidden) == mask_nms(masks, scores, 0.5) == [0, 4]
    assert hidden == [2]


def test_detect_with_hidden_keeps_the_same_detections_and_hands_back_the_hidden_ones(tmp_path):
    torch.manual_seed(0)
    seg = Segmenter.from_pretrained(_tiny_weights(tmp_path), score_thresh=0.0, rescale=False)
    image, _ = tube_image(1, size=96)
    plain = seg.detect(image)
    kept, hidden = seg.detect(image, with_hidden=True)
    assert [(d.y0, d.x0, d.score) for d in kept] == [(d.y0, d.x0, d.score) for d in plain]
    assert isinstance(hidden, list) and all(d.score <= max(k.score for k in kept) for d in hidden)


def test_box_nms_setting_reaches_the_network_and_weights_without_it_keep_0_7(tmp_path):
    path = _tiny_weights(tmp_path)
    assert Segmenter.from_pretrained(path).model.roi_heads.nms_thresh == 0.7
    seg = Segmenter.from_pretrained(path, box_nms_thresh=0.5)
    assert seg.model.roi_heads.nms_thresh == 0.5
    assert seg.configure(box_nms_thresh=0.9).model.roi_heads.nms_thresh == 0.9


def test_bfloat16_runs_the_heavy_stacks_only_and_leaves_the_model_as_it_was(tmp_path):
    from karyopipe.segmentation.infer import network_precision, predict_tile

    seg = Segmenter.from_pretrained(_tiny_weights(tmp_path), score_thresh=0.0, rescale=False)
    model = seg.model
    seen = {}
    # (a forward hook that returns something replaces the output; update() returns None)
    model.backbone.body.conv1.register_forward_hook(lambda m, a, out: seen.update(stem=out.dtype))
    model.rpn.anchor_generator.register_forward_hook(lambda m, a, out: seen.update(anchors=out[0].dtype))
    image, _ = tube_image(1, size=96)
    fast = predict_tile(model, image, precision="bfloat16")
    # Convolutions ran in bfloat16; what decodes boxes and pastes masks saw float32.
    assert seen == {"stem": torch.bfloat16, "anchors": torch.float32}
    assert fast["boxes"].dtype == np.float32 and all(c.dtype == np.float32 for _, _, c in fast["crops"])
    seen.clear()
    predict_tile(model, image)
    assert seen["stem"] == torch.float32  # the hooks are gone: float32 again
    with pytest.raises(ValueError, match="precision"):
        with network_precision(model, "float16"):
            pass
    with pytest.raises(ValueError, match="precision"):
        seg.configure(precision="half")


def test_bfloat16_on_a_cpu_without_it_warns_that_it_is_slower(tmp_path, monkeypatch):
    import warnings

    import karyopipe.segmentation.infer as infer

    seg = Segmenter.from_pretrained(_tiny_weights(tmp_path))
    monkeypatch.setattr(infer, "has_native_bfloat16", lambda device: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        seg.configure(precision="bfloat16")
    monkeypatch.setattr(infer, "has_native_bfloat16", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg.configure(precision="bfloat16")


def test_eval_seg_labelme_writes_metrics(tmp_path, capsys):
    from karyopipe.cli import main as cli

    data = tmp_path / "spreads"
    data.mkdir()
    for k in range(3):
        image, polys = tube_image(10 + k)
        write_labelme(data, f"original_{k + 1}", image, polys)
    (data / "original_9.json").write_text("{not json")
    out = tmp_path / "ws.json"
    assert cli(["eval-seg", str(data), "--baseline", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert KEYS <= set(metrics)
    assert metrics["images"] == 3 and metrics["segm_AP50"] > 0.5
    assert any("original_9" in p for p in metrics["problems"])
    rows = metrics["per_image"]
    assert len(rows) == 3 and all(r["error"] == r["counted"] - r["truth"] for r in rows)
    assert np.mean([abs(r["error"]) for r in rows]) == pytest.approx(metrics["count_mae"])
    lo, hi = metrics["count_within_1_ci95"]  # three images of three cells: an interval over cells
    assert lo <= metrics["count_within_1"] <= hi
    weights = _tiny_weights(tmp_path)
    out2 = tmp_path / "mrcnn.json"
    assert cli(["eval-seg", str(data), "--weights", str(weights), "--json", str(out2), "--split", "train"]) == 0
    metrics2 = json.loads(out2.read_text())
    assert KEYS <= set(metrics2) and metrics2["images"] == len(split_cells(["1", "2", "3"])[0])


def test_eval_seg_coco_and_yolo(tmp_path):
    from PIL import Image

    from karyopipe.cli import main as cli

    image, polys = tube_image(10)
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "a.png")
    anns = [{"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
             "bbox": [float(p[:, 0].min()), float(p[:, 1].min()), float(np.ptp(p[:, 0])), float(np.ptp(p[:, 1]))],
             "segmentation": [p.ravel().tolist()], "area": 1.0} for k, p in enumerate(polys)]
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 128, "width": 128}], "annotations": anns,
            "categories": [{"id": 1, "name": "chromosome"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert cli(["eval-seg", str(tmp_path / "coco.json"), "--baseline", "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["segm_AP50"] > 0.25
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    Image.fromarray(((1 - image) * 255).astype(np.uint8)).save(yolo / "images" / "1.png")  # brightfield look
    lines = [f"0 {(p[:, 0].min() + p[:, 0].max()) / 256} {(p[:, 1].min() + p[:, 1].max()) / 256} "
             f"{np.ptp(p[:, 0]) / 128} {np.ptp(p[:, 1]) / 128}" for p in polys]
    (yolo / "labels" / "1.txt").write_text("\n".join(lines))
    assert cli(["eval-seg", str(yolo), "--baseline", "--json", str(tmp_path / "y.json")]) == 0
    metrics = json.loads((tmp_path / "y.json").read_text())
    assert KEYS <= set(metrics) and metrics["segm_AP"] is None and metrics["recall50"] > 0.2


def test_eval_seg_bad_path_is_one_line(tmp_path, capsys):
    from karyopipe.cli import main as cli

    assert cli(["eval-seg", str(tmp_path / "nope"), "--baseline"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err


def test_real_bioimlab_spread(shared_data):
    folder = shared_data / "bioimlab" / "metaphases"
    dataset = load_spreads(folder / "original_1.json")
    sample = dataset.samples[0]
    from karyopipe.segmentation.dataset import load_gray

    gray = load_gray(sample)
    assert gray.shape == (576, 768) and len(sample.instances) >= 20
    masks = [i.get_mask(gray.shape) for i in sample.instances]
    inside = np.mean([gray[m].mean() for m in masks])
    assert inside > np.median(gray) + 0.1  # Q-band: chromosomes bright after normalisation
    assert 5 < estimate_chromosome_width(gray) < 20
    found = segment_watershed(gray)
    assert 0.4 * len(masks) < len(found) < 2 * len(masks)


def test_width_estimate_survives_a_vignetted_wide_field():
    """A global threshold on a wide brightfield field with an illumination gradient picks the bright
    corner's noise (width ~4 px, so the spread was blown up 2.5x and gave 1500 objects); the estimate
    must stay near the chromosomes' real width."""
    import cv2

    from karyopipe.io import normalize_polarity
    from karyopipe.segmentation.infer import _median_width, estimate_chromosome_width
    from karyopipe.synth import compose_spread

    spread = compose_spread("46,XY", np.random.default_rng(1), size=(1600, 1200), banding="g", pixel_scale=62,
                            illumination=0.25, noise=0.04)
    gray, _ = normalize_polarity((np.clip(spread.image, 0, 1) * 255).astype(np.uint8), "brightfield")
    assert _median_width(cv2.GaussianBlur(gray, (0, 0), 1.0)) < 6  # the failure this guards against
    assert 9 < estimate_chromosome_width(gray) < 20


def _blurry_head_output(shape=(40, 60)):
    """A sharp 8-px-wide bar with a pale band, and a blob-like probability around it."""
    region = np.full(shape, 0.1, np.float32)
    region[16:24, 8:52] = 0.9
    region[16:24, 30:33] = 0.45  # a pale band across the whole width
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    prob = np.clip(1.2 - np.hypot((yy - 20) / 9.0, (xx - 30) / 26.0), 0, 1).astype(np.float32)
    truth = np.zeros(shape, bool)
    truth[16:24, 8:52] = True
    return prob, cv2.GaussianBlur(region, (0, 0), 1.0), truth


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_refine_mask_takes_the_outline_from_the_image():
    prob, region, truth = _blurry_head_output()
    refined = refine_mask(prob, region)
    # the smoothed edge adds about a pixel all round, as in real spreads
    assert _iou(refined, truth) > 0.75
    assert _iou(refined, truth) > _iou(prob >= 0.5, truth) + 0.15
    # the pale band does not cut the chromosome in two
    assert refined[20, 31]


def test_refine_grow_sets_how_far_the_outline_reaches_into_the_blurred_rim():
    prob, region, truth = _blurry_head_output()
    areas = [refine_mask(prob, region, grow=g).sum() for g in (0.4, 0.6, 0.8)]
    assert areas[0] > areas[1] > areas[2] >= truth.sum() * 0.9
    # the default sits nearest the sharp object under the blur
    assert _iou(refine_mask(prob, region), truth) >= max(_iou(refine_mask(prob, region, grow=g), truth) for g in (0.4, 0.6))


def test_segmenter_passes_its_refine_settings_on(monkeypatch):
    from karyopipe.segmentation import infer

    seen = []

    def spy(prob, region, **kwargs):
        seen.append(kwargs)
        return prob >= 0.5

    monkeypatch.setattr(infer, "refine_mask", spy)
    image = np.zeros((64, 64), np.float32)
    image[20:28, 10:50] = 0.9
    seg = Segmenter(ComponentDetector(), InferenceSettings(rescale=False, refine_grow=0.7, refine_support=0.3))
    seg(image, keep_rejected=True)
    assert seen and all(k["grow"] == 0.7 and k["support"] == 0.3 for k in seen)


def test_refine_mask_never_leaves_the_support_and_falls_back_on_disagreement():
    prob, region, truth = _blurry_head_output()
    neighbour = region.copy()
    neighbour[26:34, 8:52] = 0.9  # a touching chromosome the head gave little probability
    refined = refine_mask(prob, neighbour, support=0.25)
    assert not (refined & (prob < 0.25)).any()
    # an empty region (no image contrast) gives back the network's own mask
    flat = np.full_like(region, 0.3)
    assert np.array_equal(refine_mask(prob, flat), prob >= 0.5)


def test_learning_rate_anneals_by_steps_or_by_time_whichever_ends_first():
    from karyopipe.segmentation.train import _lr_factor

    assert _lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert _lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert _lr_factor(100, 10, 100) == pytest.approx(0.05)
    # Early in the steps but at the end of the time budget: already at the floor.
    assert _lr_factor(20, 10, 100, time_progress=1.0) == pytest.approx(0.05)
    assert _lr_factor(20, 10, 100, time_progress=0.5) < _lr_factor(20, 10, 100)
    # Time never undoes the warm-up, and steps still count when time is short.
    assert _lr_factor(5, 10, 100, time_progress=1.0) == pytest.approx(0.6)
    assert _lr_factor(90, 10, 100, time_progress=0.1) == pytest.approx(_lr_factor(90, 10, 100))


def test_train_seg_cli_checkpoints_resumes_and_picks_its_count_threshold(tmp_path):
    from karyopipe.segmentation import train as seg_train
    from karyopipe.weights import load_weights

    data = tmp_path / "spreads"
    data.mkdir()
    for k in range(8):
        image, polys = tube_image(k)
        write_labelme(data, f"original_{k + 1}", image, polys)
    run = tmp_path / "run"
    argv = [str(data), "--out", str(run), "--backbone", "resnet18", "--fpn-channels", "32", "--crop", "96",
            "--batch", "1", "--epochs", "1", "--steps-per-epoch", "2", "--warmup", "1", "--threads", "1",
            "--val-fraction", "0.5"]
    assert seg_train.main(argv) == 0
    assert (run / "last.pt").is_file() and (run / "metrics.json").is_file()
    _, config, card = load_weights(run / "best.pth")
    # the shipped score threshold is chosen on the training spreads, and the card says how
    assert config["inference"]["score_thresh"] in seg_train.COUNT_THRESHOLDS
    assert "training spreads" in card["inference"]
    # the latest epoch is kept beside the best, whatever its score, and gets its own count threshold
    _, latest_config, latest_card = load_weights(run / "latest.pth")
    assert latest_config["epoch"] == 0 and latest_card["checkpoint"] == "the latest epoch (0)"
    assert "training spreads" in latest_card["inference"] and "best val mask AP" in card["checkpoint"]
    argv[argv.index("--epochs") + 1] = "2"
    assert seg_train.main(argv + ["--resume"]) == 0
    assert [e["epoch"] for e in json.loads((run / "metrics.json").read_text())] == [0, 1]
    assert load_weights(run / "latest.pth")[1]["epoch"] == 1
    # fine-tuning from weights keeps their model and working scale, with copy-paste on (in bfloat16 steps)
    tuned = tmp_path / "tuned"
    assert seg_train.main([str(data), "--out", str(tuned), "--init", str(run / "best.pth"), "--copy-paste", "0.5",
                           "--crop", "96", "--batch", "1", "--epochs", "1", "--steps-per-epoch", "2", "--warmup", "1",
                           "--threads", "1", "--val-fraction", "0.5", "--backbone", "resnet50", "--workers", "2",
                           "--seed", "3", "--split-seed", "5", "--precision", "bfloat16"]) == 0
    _, tuned_config, tuned_card = load_weights(tuned / "best.pth")
    assert tuned_config["model"] == config["model"]
    # ... and the cells they were selected on stay held out, whatever the seeds
    assert tuned_config["val_cells"] == config["val_cells"] and "recorded in the --init weights" in tuned_card["split"]
    assert tuned_config["inference"]["reference_width"] == config["inference"]["reference_width"]
    assert "initialised from" in tuned_card["training"] and "copy-paste" in tuned_card["training"]
    assert "bfloat16 autocast" in tuned_card["training"]
    # ... or moves them to another working scale when --work-scale is given
    rescaled = tmp_path / "rescaled"
    assert seg_train.main([str(data), "--out", str(rescaled), "--init", str(run / "best.pth"), "--work-scale", "0.5",
                           "--crop", "96", "--batch", "1", "--epochs", "1", "--steps-per-epoch", "1", "--warmup", "1",
                           "--threads", "1", "--val-fraction", "0.5"]) == 0
    rescaled_config = load_weights(rescaled / "best.pth")[1]
    assert rescaled_config["model"] == config["model"]
    assert rescaled_config["inference"]["reference_width"] == pytest.approx(0.5 * config["inference"]["reference_width"])
    # A run cut by its time budget with --anneal-by-time ends at the schedule's floor.
    timed = tmp_path / "timed"
    assert seg_train.main([str(data), "--out", str(timed), "--backbone", "resnet18", "--fpn-channels", "32",
                           "--crop", "96", "--batch", "1", "--epochs", "5", "--steps-per-epoch", "3", "--warmup", "1",
                           "--lr", "1e-3", "--time-budget", "0.0001", "--anneal-by-time", "--threads", "1",
                           "--val-fraction", "0.5"]) == 0
    history = json.loads((timed / "metrics.json").read_text())
    assert len(history) == 1 and history[0]["lr"] == pytest.approx(0.05e-3)
    assert "annealed over a 0.0001-min budget" in load_weights(timed / "best.pth")[2]["training"]
    # --stop-after ends one invocation (a GPU lease's call) mid-run: the count threshold waits for the
    # run's end, and --resume carries the epochs on.
    chunked = tmp_path / "chunked"
    chunk = [str(data), "--out", str(chunked), "--backbone", "resnet18", "--fpn-channels", "32", "--crop", "96",
             "--batch", "1", "--epochs", "3", "--steps-per-epoch", "2", "--warmup", "1", "--threads", "1",
             "--val-fraction", "0.5", "--stop-after", "0.0001"]
    assert seg_train.main(chunk) == 0
    assert "stopped after" in (chunked / "train.log").read_text()
    assert len(json.loads((chunked / "metrics.json").read_text())) == 1
    assert "training spreads" not in load_weights(chunked / "best.pth")[2].get("inference", "")
    assert seg_train.main(chunk[:-2] + ["--resume"]) == 0
    assert [e["epoch"] for e in json.loads((chunked / "metrics.json").read_text())] == [0, 1, 2]
    assert "training spreads" in load_weights(chunked / "best.pth")[2]["inference"]


def test_pipeline_keeps_weaker_detections_when_the_weights_carry_a_junk_calibration(tmp_path):
    from karyopipe.pipeline import KaryoPipeline
    from karyopipe.weights import load_weights, save_weights

    path = _tiny_weights(tmp_path)
    plain = KaryoPipeline.from_pretrained(seg_weights=path, cls_weights=None)
    assert plain.segmenter.settings.score_thresh == Segmenter.from_pretrained(path).settings.score_thresh
    state, config, meta = load_weights(path)
    config["junk_calibration"] = {"intercept": 1.0, "slope": -1.2, "score_thresh": 0.3}
    save_weights(path, state, config, meta)
    calibrated = KaryoPipeline.from_pretrained(seg_weights=path, cls_weights=None)
    # Chromosomes from 0.3; weaker detections from the rescue floor are kept back for a second look.
    assert calibrated.rescue_below == calibrated.stages["segmentation"]["score_thresh"] == 0.3
    assert calibrated.segmenter.settings.score_thresh == calibrated.rescue_floor < 0.3
    assert KaryoPipeline.from_pretrained(seg_weights=path, cls_weights=None, rescue=False).segmenter.settings.score_thresh == 0.3
    # The segmentation stage on its own (eval-seg, Segmenter.from_pretrained) keeps its own threshold.
    assert Segmenter.from_pretrained(path).settings.score_thresh != 0.3
    # A threshold below the detector's own floor lowers that floor too.
    low = Segmenter.from_pretrained(path).configure(score_thresh=0.01)
    assert low.settings.score_thresh == 0.01 and low.model.roi_heads.score_thresh == 0.01


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2).astype(np.float32)


@pytest.mark.parametrize("cy, cx, r", [(60.3, 70.8, 9.0), (40.0, 50.5, 14.0), (20.7, 30.2, 6.0)])
def test_paste_masks_puts_the_training_target_back_where_it_was(cy, cx, r):
    from torchvision.ops import roi_align

    from karyopipe.segmentation.infer import paste_masks

    truth = _disc((120, 140), cy, cx, r)
    box = np.array([[cx - r - 3.3, cy - r - 2.6, cx + r + 2.1, cy + r + 3.7]], np.float32)
    # The mask head learns torchvision's target: the box's roi_align, aligned=False.
    target = roi_align(torch.from_numpy(truth)[None, None], [torch.from_numpy(box)], 28, 1.0, 2, aligned=False)[0, 0]
    pasted = paste_masks(target.numpy()[None], box, truth.shape)[0] > 0.5
    t = truth > 0
    assert (pasted & t).sum() / (pasted | t).sum() > 0.97
    assert np.allclose(np.argwhere(pasted).mean(0), np.argwhere(t).mean(0), atol=0.1)


@pytest.mark.parametrize("scale", [0.62, 1.3, 1.7])
def test_crop_to_full_resolution_inverts_the_working_resize(scale):
    from karyopipe.segmentation.infer import crop_to_full_resolution

    full = _disc((200, 300), 101.3, 150.7, 15)
    work = cv2.resize(full, (round(300 * scale), round(200 * scale)), interpolation=cv2.INTER_LINEAR)
    sy, sx = work.shape[0] / 200, work.shape[1] / 300
    wy, wx = int(80 * scale), int(130 * scale)
    y0, x0, back = crop_to_full_resolution(work[wy:wy + int(45 * scale), wx:wx + int(45 * scale)], wy, wx, sy, sx, full.shape)
    placed = np.zeros(full.shape, bool)
    placed[y0:y0 + back.shape[0], x0:x0 + back.shape[1]] = back > 0.5
    t = full > 0
    assert (placed & t).sum() / (placed | t).sum() > 0.98
    assert np.allclose(np.argwhere(placed).mean(0), np.argwhere(t).mean(0), atol=0.1)


def test_weights_without_exact_paste_in_their_config_keep_torchvisions_paste(tmp_path):
    from karyopipe.weights import save_weights

    model = build_maskrcnn("resnet18", num_classes=2, fpn_channels=32, min_size=64)
    path = tmp_path / "old.pth"
    save_weights(path, model.state_dict(), {"model": {"backbone": "resnet18", "num_classes": 2, "fpn_channels": 32,
                                                      "min_size": 64}, "inference": {"score_thresh": 0.6}})
    assert Segmenter.from_pretrained(path).settings.exact_paste is False
    assert Segmenter.from_pretrained(path, exact_paste=True).settings.exact_paste is True
    assert InferenceSettings().exact_paste is True


def test_paste_masks_legacy_mode_matches_torchvision():
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from karyopipe.segmentation.infer import paste_masks

    rng = np.random.default_rng(3)
    masks = rng.random((5, 28, 28)).astype(np.float32)
    boxes = np.array([[3.2, 4.7, 30.1, 22.9], [-2.5, 10.0, 12.3, 40.6], [50.5, 30.2, 69.9, 49.8],
                      [0.0, 0.0, 1.5, 2.5], [20.0, 35.3, 44.4, 47.0]], np.float32)
    theirs = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (48, 70))[:, 0].numpy()
    assert np.array_equal(paste_masks(masks, boxes, (48, 70), exact=False), theirs)


def test_threaded_roi_pooling_gives_torchvision_values_on_every_thread_count():
    from collections import OrderedDict

    from torchvision.ops import MultiScaleRoIAlign

    from karyopipe.segmentation.model import ThreadedRoIAlign, threaded_roi_align

    gen = torch.Generator().manual_seed(0)
    features = OrderedDict((str(k), torch.randn(1, 8, 64 >> k, 96 >> k, generator=gen)) for k in range(4))
    features["pool"] = torch.randn(1, 8, 4, 6, generator=gen)
    corner = torch.rand(300, 2, generator=gen) * 300
    boxes = [torch.cat([corner, corner + 4 + torch.rand(300, 2, generator=gen) * 120], dim=1)]
    plain = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    threaded = ThreadedRoIAlign(["0", "1", "2", "3"], 7, 2)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            with torch.no_grad():
                assert torch.equal(threaded(features, boxes, [(256, 384)]), plain(features, boxes, [(256, 384)]))
    finally:
        torch.set_num_threads(threads)
    rois = torch.cat([torch.zeros(300, 1), boxes[0]], dim=1)
    one = torch.ops.torchvision.roi_align(features["0"], rois, 1.0, 14, 14, 2, False)
    assert torch.equal(threaded_roi_align(features["0"], rois, (14, 14), 1.0, 2, threads=4), one)
    # Training keeps torchvision's module, gradients and all.
    features["0"].requires_grad_(True)
    threaded(features, boxes, [(256, 384)]).sum().backward()
    assert features["0"].grad is not None and features["0"].grad.abs().sum() > 0


def test_the_segmenter_pools_its_boxes_on_threads():
    from karyopipe.segmentation.model import ThreadedRoIAlign

    heads = build_maskrcnn("resnet18", min_size=128).roi_heads
    assert isinstance(heads.box_roi_pool, ThreadedRoIAlign) and heads.box_roi_pool.output_size == (7, 7)
    assert isinstance(heads.mask_roi_pool, ThreadedRoIAlign) and heads.mask_roi_pool.output_size == (14, 14)
