"""Mask R-CNN builders for chromosome instance segmentation, trained from scratch.

Nothing here downloads weights: every builder passes ``weights=None`` and
``weights_backbone=None`` semantics to torchvision. Because no ImageNet
statistics can be borrowed, the backbone, FPN and heads use GroupNorm, which
trains well at the batch sizes of 1-4 images a CPU or a single GPU allows
(frozen or small-batch BatchNorm does not).

Labels: 0 = background, 1 = chromosome. Nuclei and debris are background:
BioImLab annotates only chromosomes, so every nucleus in those frames is a
negative example, and the inference filters (:mod:`karyopipe.segmentation.infer`)
reject what still gets through by size and shape.

Examples
--------
>>> from karyopipe.segmentation import build_maskrcnn
>>> model = build_maskrcnn("resnet18", min_size=128)
>>> sum(p.numel() for p in model.parameters()) > 1e6
True
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet18, resnet34, resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _mobilenet_extractor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, roi_align

BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v3")

# BioImLab chromosome boxes: sqrt(w*h) 11-82 px (1st-99th percentile), h/w 0.24-3.5;
# square boxes come from diagonal or bent chromosomes.
DEFAULT_ANCHOR_SIZES = ((12, 18), (24, 36), (48, 72), (96, 144), (192, 288))
DEFAULT_ASPECT_RATIOS = (0.25, 0.5, 1.0, 2.0, 4.0)

# Canonical grey images are [0, 1] floats with a mostly dark background.
GRAY_MEAN, GRAY_STD = 0.2, 0.25


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups (<= 32) that divide ``num_channels``."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if num_channels % g == 0)
    return nn.GroupNorm(groups, num_channels)


def _norm_layer(norm: str):
    if norm == "group":
        return group_norm
    if norm == "batch":
        return nn.BatchNorm2d
    raise ValueError(f"norm must be 'group' or 'batch', got {norm!r}")


class ScalePreservingTransform(GeneralizedRCNNTransform):
    """Normalise and batch images without resizing them.

    torchvision rescales every image to ``min_size``; karyopipe instead brings
    spreads to a fixed chromosome width beforehand (:class:`Segmenter` does),
    so the network always sees chromosomes at the scale it was trained on.
    """

    def resize(self, image, target=None):
        return image, target


def _gray_stem(conv: nn.Conv2d) -> nn.Conv2d:
    """A copy of ``conv`` that takes one input channel (karyopipe images are grey)."""
    return nn.Conv2d(
        1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )


def build_backbone(backbone: str = "resnet50", norm: str = "group", fpn_channels: int = 256):
    """FPN feature extractor, randomly initialised.

    Parameters
    ----------
    backbone : {"resnet18", "resnet34", "resnet50", "mobilenet_v3"}
    norm : {"group", "batch"}
    fpn_channels : int
        Width of the FPN maps (and so of the RPN and RoI heads). 256 is the
        torchvision default; 128 costs about a quarter of the FPN and RPN
        compute, which is most of a ResNet18 step. Fixed at 256 for mobilenet_v3.

    Returns
    -------
    nn.Module
        Maps ``(B, 1, H, W)`` to an ordered dict of ``(B, C, H/s, W/s)`` maps;
        has ``out_channels``. ResNets give 5 levels (strides 4..64), MobileNetV3
        gives 3 (strides 8, 16 and a pooled level).
    """
    norm_layer = _norm_layer(norm)
    if backbone in ("resnet18", "resnet34", "resnet50"):
        net = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}[backbone](
            weights=None, norm_layer=norm_layer
        )
        net.conv1 = _gray_stem(net.conv1)
        stage = net.inplanes // 8  # channels out of layer1
        return BackboneWithFPN(
            net,
            return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
            in_channels_list=[stage, stage * 2, stage * 4, stage * 8],
            out_channels=int(fpn_channels),
            extra_blocks=LastLevelMaxPool(),
            norm_layer=norm_layer,
        )
    if backbone == "mobilenet_v3":
        net = mobilenet_v3_large(weights=None, norm_layer=norm_layer)
        net.features[0][0] = _gray_stem(net.features[0][0])
        return _mobilenet_extractor(net, fpn=True, trainable_layers=6, norm_layer=norm_layer)
    raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")


def build_maskrcnn(
    backbone: str = "resnet50",
    num_classes: int = 2,
    norm: str = "group",
    anchor_sizes=None,
    aspect_ratios=DEFAULT_ASPECT_RATIOS,
    min_size: int = 512,
    max_size: int = 4096,
    keep_scale: bool = True,
    fpn_channels: int = 256,
    **kwargs,
) -> MaskRCNN:
    """A torchvision Mask R-CNN for grey chromosome images, with random weights.

    Parameters
    ----------
    backbone : {"resnet18", "resnet34", "resnet50", "mobilenet_v3"}
        ResNets get a 5-level FPN, MobileNetV3-Large a 3-level one.
    num_classes : int
        Including background: 2 = background + chromosome.
    norm : {"group", "batch"}
        Normalisation in backbone, FPN, RPN and mask head.
    anchor_sizes : tuple of tuple of int, optional
        One tuple per FPN level; default :data:`DEFAULT_ANCHOR_SIZES` (first 3
        levels' worth, scaled up, for mobilenet_v3).
    aspect_ratios : tuple of float
        Height / width ratios used at every level.
    min_size, max_size : int
        Only used when ``keep_scale`` is False (torchvision's own resizing).
    keep_scale : bool
        If True (default) images enter the network at their own size; callers
        handle the scale (see :class:`karyopipe.segmentation.Segmenter`).
    fpn_channels : int
        FPN width, also used by the mask head (see :func:`build_backbone`).
    **kwargs
        Passed to :class:`torchvision.models.detection.MaskRCNN` (thresholds,
        ``rpn_post_nms_top_n_train``, ``box_detections_per_img``...).

    Returns
    -------
    MaskRCNN
        In train mode ``model(images, targets)`` gives a loss dict; in eval mode
        ``model(images)`` gives, per image, ``boxes (N, 4)``, ``labels (N,)``,
        ``scores (N,)``, ``masks (N, 1, H, W)`` float in [0, 1]. Images are
        ``(1, H, W)`` float tensors in canonical polarity.
    """
    norm_layer = _norm_layer(norm)
    body = build_backbone(backbone, norm, fpn_channels)
    if anchor_sizes is None:
        anchor_sizes = DEFAULT_ANCHOR_SIZES if backbone != "mobilenet_v3" else ((32, 48), (64, 96), (128, 256))
    anchor_sizes = tuple(tuple(int(s) for s in level) for level in anchor_sizes)
    levels = 5 if backbone != "mobilenet_v3" else 3
    if len(anchor_sizes) != levels:
        raise ValueError(f"{backbone} has {levels} FPN levels but {len(anchor_sizes)} anchor size tuples were given")
    ratios = (tuple(float(r) for r in aspect_ratios),) * levels
    anchors = AnchorGenerator(anchor_sizes, ratios)
    rpn_head = RPNHead(body.out_channels, anchors.num_anchors_per_location()[0], conv_depth=1)
    mask_head = MaskRCNNHeads(body.out_channels, [body.out_channels] * 4, 1, norm_layer=norm_layer)
    model = MaskRCNN(
        body,
        num_classes=num_classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=[GRAY_MEAN],
        image_std=[GRAY_STD],
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        mask_head=mask_head,
        **kwargs,
    )
    # torchvision hard-codes a 256-channel mask predictor; match the FPN width.
    model.roi_heads.mask_predictor = MaskRCNNPredictor(body.out_channels, body.out_channels, num_classes)
    for name in ("box_roi_pool", "mask_roi_pool"):
        pool = getattr(model.roi_heads, name)
        setattr(model.roi_heads, name, ThreadedRoIAlign(pool.featmap_names, pool.output_size, pool.sampling_ratio))
    if keep_scale:
        model.transform = ScalePreservingTransform(min_size, max_size, [GRAY_MEAN], [GRAY_STD])
    _init_heads(model)
    return model


# Fewer boxes than this per thread are pooled on one thread: handing them out would cost more.
MIN_BOXES_PER_THREAD = 32
# One pool for the process, grown when more threads are asked for (torch.set_num_threads).
_POOL: ThreadPoolExecutor | None = None
_POOL_WORKERS = 0


def threaded_roi_align(features, rois, output_size, spatial_scale: float, sampling_ratio: int, threads: int):
    """``torchvision.ops.roi_align`` with the boxes shared among ``threads`` CPU threads.

    torchvision's CPU kernel pools the boxes one after another on a single
    core. Each box is pooled on its own, so the result is the same, value for
    value, however the boxes are shared.

    Parameters
    ----------
    features : Tensor, shape (1, C, H, W)
    rois : Tensor, shape (K, 5)
        ``(batch index, x1, y1, x2, y2)`` per box.

    Returns
    -------
    Tensor, shape (K, C, *output_size)
    """
    global _POOL, _POOL_WORKERS
    parts = min(threads, len(rois) // MIN_BOXES_PER_THREAD)
    if parts < 2:
        return roi_align(features, rois, output_size, spatial_scale, sampling_ratio)
    if _POOL_WORKERS < parts:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL, _POOL_WORKERS = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="karyopipe-roi-align"), parts
    chunks = _POOL.map(lambda chunk: roi_align(features, chunk, output_size, spatial_scale, sampling_ratio),
                       rois.tensor_split(parts))
    return torch.cat(list(chunks))


class ThreadedRoIAlign(MultiScaleRoIAlign):
    """:class:`torchvision.ops.MultiScaleRoIAlign` that pools on every CPU thread torch may use, at inference.

    On a 768x576 spread torchvision's single-threaded CPU ``roi_align`` was
    14 % of the ResNet50 segmenter's time (BENCHMARKS.md, End to end). With
    gradients on, on a GPU or in one thread, it is the torchvision module.
    """

    def forward(self, x, boxes, image_shapes):
        features = [v for k, v in x.items() if k in self.featmap_names]
        threads = torch.get_num_threads()
        if (torch.is_grad_enabled() or threads < 2 or features[0].device.type != "cpu" or len(features) < 2
                or len(boxes) != 1):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            super().forward(x, [boxes[0][:0]], image_shapes)  # torchvision sets its level scales on a first call
        rois = torch.cat([torch.zeros_like(boxes[0][:, :1]), boxes[0]], dim=1)
        levels = self.map_levels(boxes)
        result = torch.zeros((len(rois), features[0].shape[1], *self.output_size), dtype=features[0].dtype,
                             device=features[0].device)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            index = torch.where(levels == level)[0]
            if len(index):
                pooled = threaded_roi_align(feature, rois[index], self.output_size, scale, self.sampling_ratio,
                                            threads)
                result[index] = pooled.to(result.dtype)
        return result


def _init_heads(model: MaskRCNN) -> None:
    """Start the RPN objectness at a low prior so early training is not swamped by negatives."""
    prior = 0.01
    bias = -math.log((1 - prior) / prior)
    nn.init.constant_(model.rpn.head.cls_logits.bias, bias)


def model_config(model_kwargs: dict) -> dict:
    """The JSON-serialisable builder arguments stored with shipped weights."""
    config = dict(model_kwargs)
    for key in ("anchor_sizes", "aspect_ratios"):
        if key in config and config[key] is not None:
            config[key] = [list(v) if isinstance(v, (tuple, list)) else v for v in config[key]]
    return config


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["build_maskrcnn", "build_backbone", "group_norm", "BACKBONES", "count_parameters", "model_config"]

if __name__ == "__main__":  # pragma: no cover
    m = build_maskrcnn("resnet18")
    m.eval()
    with torch.no_grad():
        print({k: v.shape for k, v in m([torch.rand(1, 256, 320)])[0].items()})
