"""Inference wrapper: :class:`Classifier` scores the chromosomes of one cell."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from karyopipe.classification.model import HybridResNet, build_hybrid_resnet
from karyopipe.weights import CLASSIFICATION_WEIGHTS, load_weights, save_weights, weights_path


def _weights_fingerprint(model: torch.nn.Module) -> tuple:
    # Every in-place change of a tensor bumps its version counter, and a replaced tensor has a new id,
    # so this tells a changed model from an unchanged one in microseconds.
    return tuple((id(t), t._version) for t in (*model.parameters(), *model.buffers()))


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
    precision : {"float32", "bfloat16"}
        Arithmetic of predictions (:meth:`set_precision`).

    Examples
    --------
    >>> clf = Classifier.from_pretrained()                      # doctest: +SKIP
    >>> log_probs = clf.predict_cell([(gray, mask), ...])       # doctest: +SKIP
    >>> log_probs.shape                                         # doctest: +SKIP
    (46, 24)
    """

    def __init__(self, model: HybridResNet, config: dict, meta: dict | None = None, device="cpu",
                 precision: str = "float32"):
        self.model = model.to(device).eval()
        self._inference_model = self._inference_weights = None
        self.set_precision(precision)
        self.config = dict(config)
        self.meta = dict(meta or {})
        self.device = device
        self.size = tuple(self.config.get("size", (64, 32)))
        self.preprocess = self.config.get("preprocess", "pca")

    @classmethod
    def from_pretrained(cls, path=None, device="cpu", precision: str = "float32") -> "Classifier | ClassifierEnsemble":
        """Load weights saved by :meth:`save` (default ``weights/karyotype_classifier_best.pth``).

        A file written by :meth:`ClassifierEnsemble.save` gives a :class:`ClassifierEnsemble`,
        which predicts through the same ``predict_cell``. ``precision``: see :meth:`set_precision`.
        """
        path = weights_path(path, CLASSIFICATION_WEIGHTS)
        state, config, meta = load_weights(path)
        if "members" in config:
            return ClassifierEnsemble.from_state(state, config, meta, device, path).set_precision(precision)
        return cls._build(state, config, meta, device, path).set_precision(precision)

    def set_precision(self, precision: str) -> "Classifier":
        """Predict in ``"float32"`` (default) or ``"bfloat16"``; returns ``self``.

        bfloat16 runs the network under autocast, for CPUs with native
        bfloat16 (AVX512-BF16, AMX) where it is faster than float32 for the
        wider members; the log-probabilities are computed in float32 from its
        logits. The weights stay float32. What it changes on the val crops is
        in BENCHMARKS.md (End to end, thirty-first update).
        """
        from karyopipe.segmentation.infer import PRECISIONS

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        return self

    @classmethod
    def _build(cls, state: dict, config: dict, meta: dict, device, where) -> "Classifier":
        model = build_hybrid_resnet(**config)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{where}: weights do not match their config ({str(exc).splitlines()[0]})") from None
        return cls(model, config, meta, device).optimize_for_inference()

    def optimize_for_inference(self) -> "Classifier":
        """Predict through a faster copy of ``model`` on the CPU (:func:`~.model.inference_copy`).

        :meth:`from_pretrained` does this. Predictions follow ``model``: when
        its weights change (an optimiser step, ``load_state_dict``, a replaced
        layer), the next prediction takes a new copy first. Returns ``self``.
        """
        from karyopipe.classification.model import inference_copy

        fast = inference_copy(self.model)
        self._inference_model = None if fast is self.model else fast
        self._inference_weights = _weights_fingerprint(self.model)
        return self

    def _predictor(self):
        if self._inference_model is not None and _weights_fingerprint(self.model) != self._inference_weights:
            self.optimize_for_inference()
        return self._inference_model or self.model

    def __getstate__(self) -> dict:
        # oneDNN's prepacked modules do not pickle; the copy is rebuilt from the model on unpickling,
        # so a classifier (and a pipeline holding one) still travels to worker processes.
        state = dict(self.__dict__)
        state["_inference_model"] = self._inference_model is not None
        state.pop("_inference_weights", None)
        return state

    def __setstate__(self, state: dict) -> None:
        optimized = state.pop("_inference_model", False)
        self.__dict__.update(state)
        self._inference_model = self._inference_weights = None
        if optimized:
            self.optimize_for_inference()

    def save(self, path, card: dict | None = None) -> Path:
        """Store fp16 weights + config + model card via :func:`karyopipe.weights.save_weights`."""
        return save_weights(path, self.model.state_dict(), self.config, card if card is not None else self.meta)

    def prepare(self, crops, reference=None) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, L, W) and features (n, F) of one cell's crops or geometries.

        ``reference`` (bool per object) flags the objects the cell-relative
        features are measured against; default all.
        """
        from karyopipe.classification.preprocess import prepare_cell, prepare_from_geometries

        crops = list(crops)
        if crops and hasattr(crops[0], "straightened"):
            return prepare_from_geometries(crops, self.size, self.preprocess, reference)
        pairs = []
        for item in crops:
            if isinstance(item, np.ndarray):
                item = (item, None)
            gray, mask = item
            pairs.append((np.asarray(gray, dtype=np.float32), mask))
        return prepare_cell(pairs, self.size, self.preprocess, reference)

    @torch.no_grad()
    def predict_arrays(self, images: np.ndarray, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Calibrated log-probabilities (n, 24) of preprocessed images (n, L, W) and features (n, F)."""
        # Temperature fitted on validation cells (karyopipe.classification.calibrate); 1.0 = raw logits.
        temperature = float(self.config.get("temperature", 1.0))
        low_precision = self.precision == "bfloat16"
        # The prepared float32 copy's oneDNN modules do not run under autocast; bfloat16 uses the model itself.
        predictor = self.model if low_precision else self._predictor()
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i: i + batch_size], dtype=np.float32))[:, None]
            f = torch.from_numpy(np.ascontiguousarray(features[i: i + batch_size], dtype=np.float32))
            with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=low_precision):
                logits = predictor(x.to(self.device), f.to(self.device))
            out.append(torch.log_softmax(logits.float() / temperature, dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 24), dtype=np.float32)

    def predict_cell(self, crops, reference=None) -> np.ndarray:
        """Log-probabilities of every chromosome of ONE cell.

        Parameters
        ----------
        crops : list of (gray, mask) or list of ChromosomeGeometry
            Canonical-polarity grey crops (float in [0, 1], chromosome bright) with
            boolean masks (``None`` to compute one), all at the cell's native scale,
            or geometry results. Features are relative to the cell, so pass the
            whole cell at once.
        reference : array_like of bool, shape (n,), optional
            The objects the cell is measured by (mean size, length rank);
            default all. Pass the confident ones when the list also holds
            likely debris.

        Returns
        -------
        log_probs : ndarray, shape (n, 24), float32; column k-1 is class k (23 = X, 24 = Y)
        """
        images, features = self.prepare(crops, reference)
        return self.predict_arrays(images, features)


class ClassifierEnsemble:
    """Several :class:`Classifier` s, each with its own preprocessing, voting together.

    The members' calibrated log-probabilities are averaged and renormalised
    (a geometric mean of their probabilities). Members that straighten the
    chromosome differently (PCA upright, medial axis) make different mistakes,
    so the average is right more often than either alone.

    Parameters
    ----------
    members : list of Classifier
    meta : dict
        Model-card fields of the ensemble file.

    Examples
    --------
    >>> clf = Classifier.from_pretrained()    # an ensemble when the file holds one  # doctest: +SKIP
    >>> clf.predict_cell(geometries).shape                                          # doctest: +SKIP
    (46, 24)
    """

    def __init__(self, members: list[Classifier], meta: dict | None = None):
        if not members:
            raise ValueError("an ensemble needs at least one classifier")
        self.members = list(members)
        self.meta = dict(meta or {})
        # Split settings and held-out cells are the members' (they must agree); the first member speaks for them.
        self.config = {k: v for k, v in members[0].config.items() if k in _SHARED_CONFIG}
        self.config["members"] = [m.config for m in members]
        self.preprocess = "geometry" if any(m.preprocess == "geometry" for m in members) else members[0].preprocess
        self.device = members[0].device

    @property
    def precision(self) -> str:
        return self.members[0].precision

    def set_precision(self, precision: str) -> "ClassifierEnsemble":
        """Every member's :meth:`Classifier.set_precision`; returns ``self``."""
        for member in self.members:
            member.set_precision(precision)
        return self

    @staticmethod
    def combine(log_probs: list[np.ndarray]) -> np.ndarray:
        """Average (n, 24) log-probabilities and renormalise each row."""
        mean = np.mean(np.stack(log_probs), axis=0)
        return (mean - np.logaddexp.reduce(mean, axis=1, keepdims=True)).astype(np.float32)

    def predict_cell(self, crops, reference=None) -> np.ndarray:
        """Log-probabilities (n, 24) of one cell's crops or geometries; see :meth:`Classifier.predict_cell`."""
        crops = list(crops)
        return self.combine([m.predict_cell(crops, reference) for m in self.members])

    def save(self, path, card: dict | None = None) -> Path:
        """One fp16 file holding every member (``members.<i>.`` key prefixes)."""
        state = {f"members.{i}.{k}": v for i, m in enumerate(self.members) for k, v in m.model.state_dict().items()}
        return save_weights(path, state, self.config, card if card is not None else self.meta)

    @classmethod
    def from_state(cls, state: dict, config: dict, meta: dict, device="cpu", path="weights") -> "ClassifierEnsemble":
        members = [Classifier._build(member_state(state, i), member_config, {}, device, f"{path} member {i}")
                   for i, member_config in enumerate(config["members"])]
        return cls(members, meta)


def member_state(state: dict, index: int) -> dict:
    """State dict of member ``index`` of an ensemble file (keys without the ``members.<i>.`` prefix)."""
    prefix = f"members.{index}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# Config keys that describe the data split rather than one model; an ensemble keeps them.
_SHARED_CONFIG = ("split_seed", "val_fraction", "test_fraction", "heldout_cells")
