"""Inference wrapper: :class:`Classifier` scores the chromosomes of one cell."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from karyopipe.classification.model import HybridResNet, build_hybrid_resnet
from karyopipe.weights import CLASSIFICATION_WEIGHTS, load_weights, save_weights, weights_path


class Classifier:
    """A trained :class:`HybridResNet` with its preprocessing settings.

    Parameters
    ----------
    model : HybridResNet
    config : dict
        Builder arguments plus ``size`` ([L, W]) and ``preprocess`` (``"pca"`` or ``"geometry"``).
    meta : dict
        Model-card fields stored with the weights.
    device : str

    Examples
    --------
    >>> clf = Classifier.from_pretrained()                      # doctest: +SKIP
    >>> log_probs = clf.predict_cell([(gray, mask), ...])       # doctest: +SKIP
    >>> log_probs.shape                                         # doctest: +SKIP
    (46, 24)
    """

    def __init__(self, model: HybridResNet, config: dict, meta: dict | None = None, device="cpu"):
        self.model = model.to(device).eval()
        self.config = dict(config)
        self.meta = dict(meta or {})
        self.device = device
        self.size = tuple(self.config.get("size", (64, 32)))
        self.preprocess = self.config.get("preprocess", "pca")

    @classmethod
    def from_pretrained(cls, path=None, device="cpu") -> "Classifier":
        """Load weights saved by :meth:`save` (default ``weights/karyotype_classifier_best.pth``)."""
        path = weights_path(path, CLASSIFICATION_WEIGHTS)
        state, config, meta = load_weights(path)
        model = build_hybrid_resnet(**config)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{path}: weights do not match their config ({str(exc).splitlines()[0]})") from None
        return cls(model, config, meta, device)

    def save(self, path, card: dict | None = None) -> Path:
        """Store fp16 weights + config + model card via :func:`karyopipe.weights.save_weights`."""
        return save_weights(path, self.model.state_dict(), self.config, card if card is not None else self.meta)

    def prepare(self, crops) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, L, W) and features (n, F) of one cell's crops or geometries."""
        from karyopipe.classification.preprocess import prepare_cell, prepare_geometries

        crops = list(crops)
        if crops and hasattr(crops[0], "straightened"):
            if self.preprocess == "geometry":
                return prepare_geometries(crops, self.size)
            # A PCA-upright model given geometries: the straightened chromosome is already
            # upright, so it goes through the same fallback path the model was trained with.
            crops = [(np.clip(np.asarray(g.straightened, np.float32), 0, None), None) for g in crops]
            crops = [(s, s > 0) if (s > 0).any() else (s, None) for s, _ in crops]
        pairs = []
        for item in crops:
            if isinstance(item, np.ndarray):
                item = (item, None)
            gray, mask = item
            pairs.append((np.asarray(gray, dtype=np.float32), mask))
        return prepare_cell(pairs, self.size, self.preprocess)

    @torch.no_grad()
    def predict_arrays(self, images: np.ndarray, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Calibrated log-probabilities (n, 24) of preprocessed images (n, L, W) and features (n, F)."""
        # Temperature fitted on validation cells (karyopipe.classification.calibrate); 1.0 = raw logits.
        temperature = float(self.config.get("temperature", 1.0))
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i: i + batch_size], dtype=np.float32))[:, None]
            f = torch.from_numpy(np.ascontiguousarray(features[i: i + batch_size], dtype=np.float32))
            logits = self.model(x.to(self.device), f.to(self.device))
            out.append(torch.log_softmax(logits.float() / temperature, dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 24), dtype=np.float32)

    def predict_cell(self, crops) -> np.ndarray:
        """Log-probabilities of every chromosome of ONE cell.

        Parameters
        ----------
        crops : list of (gray, mask) or list of ChromosomeGeometry
            Canonical-polarity grey crops (float in [0, 1], chromosome bright) with
            boolean masks (``None`` to compute one), all at the cell's native scale,
            or geometry results. Features are relative to the cell, so pass the
            whole cell at once.

        Returns
        -------
        log_probs : ndarray, shape (n, 24), float32; column k-1 is class k (23 = X, 24 = Y)
        """
        images, features = self.prepare(crops)
        return self.predict_arrays(images, features)
