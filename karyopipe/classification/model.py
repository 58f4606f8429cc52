"""HybridResNet: a from-scratch ResNet on straightened chromosome images fused with per-cell features.

Built from torchvision's ResNet blocks (``weights=None``: nothing pretrained,
nothing downloaded) with a 1-channel stem. The image embedding is concatenated
with an MLP embedding of the standardised feature vector (relative length,
area, brightness, ... of the chromosome within its cell) and a small head gives
24 logits (index = class number - 1).

Examples
--------
>>> import torch
>>> net = build_hybrid_resnet(num_features=6, width=8)
>>> net(torch.rand(2, 1, 64, 32), torch.rand(2, 6)).shape
torch.Size([2, 24])
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class _Trunk(ResNet):
    """torchvision ResNet with a 1-channel stem, configurable width and no classifier.

    ``stem="small"`` (3x3 stride-1 conv, then max-pool) keeps 4x more resolution
    than the ImageNet stem, which chromosome crops of 20-120 px need.
    """

    def __init__(self, arch="resnet18", width=64, stem="small", norm="batch", in_channels=1):
        nn.Module.__init__(self)
        block, layers = ARCHS[arch]
        if norm == "batch":
            self._norm_layer = nn.BatchNorm2d
        elif norm == "group":
            self._norm_layer = lambda c: nn.GroupNorm(min(32, max(1, c // 4)), c)
        else:
            raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        if stem == "small":
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        else:
            raise ValueError(f"stem must be 'small' or 'imagenet', got {stem!r}")
        self.bn1 = self._norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = width * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last norm of each residual branch: each block starts as identity,
        # which makes from-scratch training markedly more stable.
        for m in self.modules():
            last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
            if isinstance(m, (BasicBlock, Bottleneck)) and last is not None and last.weight is not None:
                nn.init.zeros_(last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def standardize_batch(images: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per-image standardisation over the chromosome pixels; background stays 0.

    Parameters
    ----------
    images : Tensor, shape (B, 1, H, W), background 0
    """
    fg = (images > 1e-3).to(images.dtype)
    count = fg.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
    mean = (images * fg).sum(dim=(-2, -1), keepdim=True) / count
    var = (((images - mean) * fg) ** 2).sum(dim=(-2, -1), keepdim=True) / count
    return (images - mean) / torch.sqrt(var + eps) * fg


class HybridResNet(nn.Module):
    """ResNet image embedding + feature MLP -> 24 chromosome logits.

    Parameters
    ----------
    num_features : int
        Length F of the per-chromosome feature vector (0: CNN only).
    arch : {"resnet18", "resnet34", "resnet50"}
    width : int
        Channels of the first stage (64 = torchvision's ResNet).
    stem : {"small", "imagenet"}
    norm : {"batch", "group"}
    use_image : bool
        False gives the features-only ablation (no CNN at all).
    feature_mean, feature_std : sequence of float, optional
        Training-set statistics; features are standardised inside the model so
        callers pass raw features.
    num_classes : int
    dropout : float

    Shapes
    ------
    forward(images (B, 1, H, W) float in [0, ~1], background 0; features (B, F)) -> logits (B, 24)
    """

    def __init__(self, num_features=6, arch="resnet18", width=64, stem="small", norm="batch",
                 use_image=True, feature_mean=None, feature_std=None, num_classes=24, dropout=0.2):
        super().__init__()
        self.num_features = int(num_features)
        self.use_image = bool(use_image)
        mean = torch.zeros(max(self.num_features, 1)) if feature_mean is None else torch.as_tensor(feature_mean, dtype=torch.float32)
        std = torch.ones(max(self.num_features, 1)) if feature_std is None else torch.as_tensor(feature_std, dtype=torch.float32)
        self.register_buffer("feature_mean", mean.float().clone())
        self.register_buffer("feature_std", std.float().clamp(min=1e-6).clone())
        embed = 0
        if self.use_image:
            self.backbone = _Trunk(arch, width, stem, norm)
            embed += self.backbone.out_channels
        if self.num_features > 0:
            self.feature_mlp = nn.Sequential(
                nn.Linear(self.num_features, 64), nn.ReLU(inplace=True), nn.Linear(64, 64), nn.ReLU(inplace=True)
            )
            embed += 64
        if embed == 0:
            raise ValueError("HybridResNet needs the image branch, features, or both")
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(embed, 256), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, images: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        if self.use_image:
            parts.append(self.backbone(standardize_batch(images)))
        if self.num_features > 0:
            if features is None:
                raise ValueError(f"this model needs a (B, {self.num_features}) feature tensor")
            parts.append(self.feature_mlp((features - self.feature_mean) / self.feature_std))
        return self.head(torch.cat(parts, dim=1))


def build_hybrid_resnet(num_features=6, arch="resnet18", width=64, stem="small", norm="batch",
                        use_image=True, feature_mean=None, feature_std=None, dropout=0.2, **_ignored) -> HybridResNet:
    """Build a :class:`HybridResNet` from a (JSON) config; unknown keys are ignored.

    ResNet18 at full width (64) is the default architecture; the shipped CPU-trained
    weights use a narrower width (see their model card).
    """
    return HybridResNet(num_features=num_features, arch=arch, width=width, stem=stem, norm=norm,
                        use_image=use_image, feature_mean=feature_mean, feature_std=feature_std, dropout=dropout)


MODEL_CONFIG_KEYS = ("num_features", "arch", "width", "stem", "norm", "use_image", "dropout")


def inference_copy(model: HybridResNet, atol: float = 1e-4) -> HybridResNet:
    """A copy of an eval-mode ``model`` made faster for CPU inference, or ``model`` itself.

    The copy's image trunk has its BatchNorm folded into the convolutions and
    runs in oneDNN's blocked layout with prepacked weights
    (:func:`torch.fx.experimental.optimization.optimize_for_inference`): about
    1.5-2x faster on a batch of one cell's chromosomes on a 2-core CPU
    (BENCHMARKS.md, End to end, thirtieth update). Its logits match
    ``model``'s to float rounding; the copy is checked against ``model`` on a
    probe batch and ``model`` is returned unchanged where that check fails,
    where oneDNN is missing, or off the CPU. The copy does not follow later
    changes to ``model``'s weights; :meth:`Classifier.optimize_for_inference
    <karyopipe.classification.classifier.Classifier.optimize_for_inference>`
    retakes it when they change.

    Parameters
    ----------
    model : HybridResNet
        In eval mode, on the CPU.
    atol : float
        Largest logit difference on the probe batch that is still float rounding.

    Returns
    -------
    HybridResNet
        Same call signature: images (B, 1, H, W), features (B, F) -> logits (B, 24).
    """
    from torch.fx.experimental.optimization import optimize_for_inference

    first = next(model.parameters(), None)
    if (not model.use_image or model.training or first is None or first.device.type != "cpu"
            or first.dtype != torch.float32 or not torch.backends.mkldnn.is_available()):
        return model
    fast = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 64, 32, generator=generator)
    features = torch.randn(3, max(model.num_features, 1), generator=generator)[:, :model.num_features]
    try:
        with warnings.catch_warnings():
            # oneDNN's prepacked convolutions are TorchScript modules, whose decorators warn on import.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
            fast.backbone = optimize_for_inference(fast.backbone)
        with torch.no_grad():
            agree = torch.allclose(fast(images, features), model(images, features), rtol=0, atol=atol)
    except Exception:  # an optimisation only: any failure of it leaves the plain model in charge
        return model
    return fast if agree else model
