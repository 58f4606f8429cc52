"""The full pipeline: spread in, karyotype out (:class:`KaryoPipeline`).

Stages, each callable on its own:

1. :meth:`KaryoPipeline.load` - read the file, grey, canonical polarity
   (:func:`karyopipe.io.normalize_polarity` detects G-band brightfield vs Q-band
   fluorescence).
2. :meth:`KaryoPipeline.segment` - Mask R-CNN (:class:`karyopipe.segmentation.Segmenter`);
   the watershed baseline when no segmentation weights are found.
3. :meth:`KaryoPipeline.analyze` - axis, centromere, straightening per chromosome
   (:func:`karyopipe.geometry.analyze_chromosome`).
4. :meth:`KaryoPipeline.classify` - (n, 24) log-probabilities
   (:class:`karyopipe.classification.Classifier`); skipped when no weights.
5. :meth:`KaryoPipeline.assign` - joint assignment, ISCN karyotype
   (:func:`karyopipe.karyogram.assign_karyotype`).

Examples
--------
>>> import numpy as np
>>> from karyopipe.pipeline import KaryoPipeline
>>> pipe = KaryoPipeline()               # watershed, no classifier: runs anywhere
>>> img = np.zeros((80, 80), np.float32); img[10:50, 20:28] = 1.0
>>> result = pipe(img)
>>> len(result.chromosomes), result.chromosomes[0].class_name
(1, '?')
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from karyopipe.classes import CLASS_NAMES, class_name
from karyopipe.io import BACKGROUND_CEILING
from karyopipe.pipeline.edges import picture_frame, touches_picture_edge

# Crops for geometry get this many pixels of context around the mask's box.
_PAD = 4
# Below this label confidence a chromosome is marked in the overlay and report.
LOW_CONFIDENCE = 0.9
#: Flags that send a chromosome to the reader whatever its confidence (:attr:`ChromosomeResult.low_confidence`).
# "classifier_disagrees" is the assigner's (karyopipe.karyogram.assign.CLASSIFIER_DISAGREES_BELOW).
_CHECK_FLAGS = ("uncertain", "rescued", "split", "at_image_edge", "weak_detection", "classifier_disagrees")
#: Flags of objects a reviewer changed (``karyopipe review``); a class a reviewer set has been checked.
SET_FLAG, DROP_FLAG = "set_by_reviewer", "dropped_by_reviewer"
# Above this many objects the segmentation did not see one metaphase (near-tetraploid cells
# have 92 chromosomes): classifying and calling a karyotype would only dress up noise.
MAX_OBJECTS_FOR_A_CALL = 100
# The classifier measures each object against its cell (relative length, area,
# length rank). A spread's detections include debris and fragments, kept down to
# the junk calibration's low score, which would shift every relative size; so the
# cell is measured by the detections at least this sure, when there are enough.
# Chosen on the segmenter's training frames (karyopipe eval-e2e, BENCHMARKS.md).
REFERENCE_SCORE = 0.9
MIN_REFERENCE_OBJECTS = 10
# A second look before an autosomal loss is called. Constitutional autosomal monosomies are
# almost never seen in a dividing cell, while a chromosome missed by the segmenter is common,
# so when the call has a loss, detections down to this score (below the junk calibration's
# floor) may fill the empty slot. They may not add a gain or change the sex complement. Chosen
# with the junk floor's grid on the segmenter's training frames (BENCHMARKS.md, End to end).
RESCUE_FLOOR = 0.1
# A low-score detection lying mostly on a kept one is a piece of it, not a missed chromosome.
RESCUE_MAX_OVERLAP = 0.5
# ... and it must be among the classifier's likeliest classes for the object (the report's top 3).
RESCUE_TOP_K = 3
# When a loss is still called after that, the segmenter may look again with the spread this much
# larger: some touching chromosomes detected as one object are seen apart at a larger scale.
# The zoomed view may replace a kept object only by parts that lie mostly inside it
# (SPLIT_INSIDE of each part's area) and together cover most of it (SPLIT_COVER), under the
# second look's rules. Opt-in (from_pretrained(zoom_look=ZOOM_LOOK)): it mended a training frame
# but lost a matched chromosome on val (BENCHMARKS.md, End to end).
ZOOM_LOOK = 1.25
SPLIT_INSIDE = 0.8
SPLIT_COVER = 0.8
# The segmenter sometimes also sees the two chromosomes of a merged detection apart, at a lower
# score, and its mask NMS drops such a part for lying inside the merge (BENCHMARKS.md, End to end).
# A kept object with one such part may be split into the part and the rest, if the rest is at
# least this share of it: the smallest chromosome (21) is about a fifth as long as the longest (1)
# (hg38 ideogram lengths). A design bound, not tuned; the second look's rules decide.
SPLIT_REMAINDER = 0.15
# If a loss is still called after every look, a second segmenter (the shipped R18, opt-in) may
# look at the spread: it misses and finds other chromosomes than the R50, and on the training
# spreads what only it finds raised AP50 (BENCHMARKS.md, Segmentation, thirty-first update). Its
# objects enter as the fused score there would rank them, as weak detections: their own score
# times this (0.5 / 1.5, the second opinion's weight), so the junk calibration doubts them.
SECOND_SEGMENTER_SCORE_SCALE = 1.0 / 3.0


@dataclass
class Reserve:
    """What the segmenter kept back from the cell, outlined only when a look asks for it.

    Calling it gives the weak detections (:meth:`KaryoPipeline.segment_with_reserve`);
    :attr:`hidden` gives the detections dropped for lying inside a kept one
    (:func:`karyopipe.segmentation.infer.mask_nms`'s ``hidden``), scored at the
    cell's own threshold or above.
    """

    weak: Callable[[], list] = list
    hidden: Callable[[], list] = list

    def __call__(self) -> list:
        return self.weak()


@dataclass
class ChromosomeResult:
    """One detected chromosome.

    Attributes
    ----------
    id : int
        Index in the spread (0-based), the number drawn in ``overlay.png``.
    bbox : tuple of float
        (x0, y0, x1, y1) in input pixels.
    polygon : ndarray, shape (K, 2)
        Outer contour, xy input pixels.
    mask : ndarray, shape (H, W), bool
        Full-image mask (not written to the report).
    score : float
        Segmentation score (Mask R-CNN probability, or the watershed's contrast proxy).
    label : int
        Class number 1..24 (23 = X, 24 = Y), 0 when unclassified or unassigned.
    confidence : float
        Probability that ``label`` is right given the whole cell (NaN when unclassified).
    top3 : list of (str, float)
        Classifier's three best classes with probabilities (empty when unclassified).
    length_px, relative_length : float
        Axis length in pixels and as a percentage of the cell's total length.
    centromere_index : float
        p / (p + q).
    polarity_confidence : float
        Geometry's confidence that the p-arm is the upper end of ``straightened``.
    flags : list of str
        Geometry flags plus karyogram flags (``"uncertain"``, ``"extra_copy"``...), and
        ``"rescued"``: a weak detection taken to fill a slot instead of calling a loss;
        ``"split"``: a part of an object split by the hidden parts the segmenter saw inside it
        (``hidden_look``) or by the zoomed look (``zoom_look``), likewise;
        ``"at_image_edge"``: the mask reaches the picture's border, so part of the chromosome
        may lie outside it and its length and class are less sure;
        ``"weak_detection"``: a Y, or one of a class the call holds too many of, found by a
        detection scored below :data:`REFERENCE_SCORE` (it may be a piece of another chromosome).
        ``"classifier_disagrees"``: the classifier, reading the object alone, gave ``label`` less
        than :data:`karyopipe.karyogram.assign.CLASSIFIER_DISAGREES_BELOW`; the assignment chose
        it for the cell's sake (a flag of the assignment's, like ``"uncertain"``).
    geometry : ChromosomeGeometry or None
        The full geometry result (axis in input pixels, straightened image).

    Examples
    --------
    >>> c = ChromosomeResult(id=0, bbox=(0, 0, 4, 9), polygon=np.zeros((0, 2)), mask=None)
    >>> c.class_name, c.low_confidence
    ('?', True)
    """

    id: int
    bbox: tuple
    polygon: np.ndarray
    mask: np.ndarray | None = field(repr=False, default=None)
    score: float = float("nan")
    label: int = 0
    confidence: float = float("nan")
    top3: list = field(default_factory=list)
    length_px: float = float("nan")
    relative_length: float = float("nan")
    centromere_index: float = float("nan")
    polarity_confidence: float = float("nan")
    flags: list = field(default_factory=list)
    geometry: object = field(repr=False, default=None)

    @property
    def class_name(self) -> str:
        """``"1"``..``"22"``, ``"X"``, ``"Y"``, or ``"?"`` when unclassified."""
        return class_name(self.label) if self.label else "?"

    @property
    def low_confidence(self) -> bool:
        """True when unclassified, below :data:`LOW_CONFIDENCE`, or flagged for a check (:data:`_CHECK_FLAGS`).

        A class a reviewer set (``karyopipe review``) has been checked, whatever its other flags.
        """
        return bool(self.check_reasons)

    @property
    def check_reasons(self) -> list[str]:
        """Why the chromosome is marked for a check: ``"unclassified"``, ``"low_confidence"`` (the
        assignment's confidence below :data:`LOW_CONFIDENCE`) and each flag of :data:`_CHECK_FLAGS` it
        carries; empty when it is not marked (or a reviewer set its class)."""
        if self.label and SET_FLAG in self.flags:
            return []
        if not self.label:
            return ["unclassified"]
        return ((["low_confidence"] if not (self.confidence >= LOW_CONFIDENCE) else [])
                + [flag for flag in _CHECK_FLAGS if flag in self.flags])


@dataclass
class KaryotypeResult:
    """Everything the pipeline found on one spread.

    Attributes
    ----------
    source : str
        File name, or ``"<array>"``.
    image : ndarray, shape (H, W), float32
        Canonical-polarity grey image (chromosomes bright).
    polarity : str
        ``"brightfield"`` (G-band, inverted on load) or ``"fluorescence"`` (Q-band).
    chromosomes : list of ChromosomeResult
    karyotype : str
        ISCN numerical karyotype, ``""`` when no call was made.
    statement : str
        Plain-language summary, including why no call was made.
    abnormalities : list of dict
        ``{"description", "confidence", "kind", "number"}``.
    possible_abnormalities : list of dict
        Gains not called but worth a look (an object left out as debris that
        may be a third copy), same keys, kind ``"possible_gain"``.
    sex : str
    sex_confidence : float
        Probability that ``sex`` is right against the other complements (NaN without a call).
    call : KaryotypeCall or None
        The karyogram stage's full result.
    timings : dict of str to float
        Seconds per stage.
    stages : dict of str to dict
        Per stage what ran: model/weights file, or the fallback and why.
    warnings : list of str
        Everything that degraded this result (missing weights, no chromosomes...).
    scale : dict
        ``chromosome_width_px`` (measured, or as given) and the ``working_scale``
        the segmenter resized the spread by; empty without a Mask R-CNN result.

    Examples
    --------
    >>> pipe = KaryoPipeline.from_pretrained()                     # doctest: +SKIP
    >>> result = pipe("examples/spread_46XY.png")                   # doctest: +SKIP
    >>> result.karyotype, len(result.chromosomes)                   # doctest: +SKIP
    ('46,XY', 46)
    >>> result.save("out/spread_46XY")   # overlay.png, karyogram.png, report.json, chromosomes.csv  # doctest: +SKIP
    """

    source: str
    image: np.ndarray = field(repr=False)
    polarity: str
    chromosomes: list
    karyotype: str = ""
    statement: str = ""
    abnormalities: list = field(default_factory=list)
    sex: str = ""
    sex_confidence: float = float("nan")
    possible_abnormalities: list = field(default_factory=list)
    call: object = field(repr=False, default=None)
    timings: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    scale: dict = field(default_factory=dict)

    @property
    def banding(self) -> str:
        """``"g"`` for brightfield input, ``"q"`` for fluorescence: how pictures are shown."""
        return "g" if self.polarity == "brightfield" else "q"

    @property
    def n_to_check(self) -> int:
        """How many chromosomes are marked for a check (:attr:`ChromosomeResult.low_confidence`), as the overlay marks them."""
        return sum(bool(c.low_confidence) for c in self.chromosomes)

    @property
    def review_prompts(self) -> list[str]:
        """What in this report asks the reader for a look before it is signed out; ``[]`` when nothing does.

        Objects marked for a check (:attr:`ChromosomeResult.low_confidence`),
        an abnormal or possible abnormal call, an uncertain sex call, no call
        at all, and the pipeline's warnings. ``karyopipe eval-e2e`` counts the
        wrong calls that come with none of these. A result a reviewer has
        signed (``karyopipe review``, ``stages["review"]``) has had its look:
        ``[]``.
        """
        from karyopipe.karyogram.assign import UNCERTAIN_BELOW

        if "review" in self.stages:
            return []
        prompts = []
        marked = self.n_to_check
        if marked:
            prompts.append(f"{marked} object{'s' if marked > 1 else ''} marked for a check")
        if not self.karyotype:
            prompts.append("no karyotype call")
        if self.abnormalities:
            prompts.append(f"abnormal call {self.karyotype}")
        if self.possible_abnormalities:
            prompts.append("possible " + ", ".join(a["description"] for a in self.possible_abnormalities))
        if self.sex and self.sex_confidence < UNCERTAIN_BELOW:
            prompts.append(f"sex call uncertain (p={self.sex_confidence:.2f})")
        if self.warnings:
            prompts.append(f"{len(self.warnings)} warning{'s' if len(self.warnings) > 1 else ''}")
        return prompts

    def karyogram_image(self) -> np.ndarray:
        """Karyogram picture, (H, W, 3) uint8 RGB (:func:`karyopipe.karyogram.draw_karyogram`).

        Unclassified chromosomes are laid out in the tray below the (empty) rows.
        """
        from karyopipe.karyogram import draw_karyogram

        straight, ct = [], []
        for c in self.chromosomes:
            g = c.geometry
            straight.append(g.straightened if g is not None else np.zeros((1, 8), np.float32))
            ct.append(g.centromere_t if g is not None else 0.5)
        call = self.call if self.call is not None else _unassigned_call(len(self.chromosomes), self.statement)
        title = self.karyotype or (self.statement.split(".")[0] if self.statement else None)
        return draw_karyogram(straight, call, centromere_t=ct if straight else None, banding=self.banding, title=title,
                              marked=[c.low_confidence for c in self.chromosomes])

    def overlay_image(self) -> np.ndarray:
        """Spread with masks, outlines, ids and class labels, (H, W, 3) uint8 (:func:`draw_overlay`)."""
        from karyopipe.pipeline.overlay import draw_overlay

        return draw_overlay(self.image, self.chromosomes, banding=self.banding, title=self.karyotype or None)

    def label_image(self) -> np.ndarray:
        """Instance labels, (H, W) uint16: 0 background, ``id + 1`` on each chromosome (``masks.png``).

        Overlaps go to the smaller chromosome; :func:`karyopipe.pipeline.report.label_image`.
        """
        from karyopipe.pipeline.report import label_image

        return label_image(self.chromosomes, self.image.shape[:2])

    def to_dict(self) -> dict:
        """JSON-ready report (the content of ``report.json``)."""
        from karyopipe.pipeline.report import result_to_dict

        return result_to_dict(self)

    def save(self, out_dir) -> dict[str, Path]:
        """Write ``overlay.png``, ``karyogram.png``, ``masks.png``, ``report.json`` and ``chromosomes.csv`` into ``out_dir``.

        Returns the written paths by name.
        """
        from karyopipe.pipeline.report import save_result

        return save_result(self, out_dir)


def _unassigned_call(n: int, statement: str = ""):
    from karyopipe.karyogram import KaryotypeCall

    return KaryotypeCall(labels=np.zeros(n, int), confidence=np.full(n, np.nan), flags=[["unassigned"] for _ in range(n)],
                         karyotype="", abnormalities=[], sex="", statement=statement, pairs={}, callable=False)


def detection_scores(instances) -> np.ndarray:
    """Detection score per instance, shape (n,), float; NaN where the segmenter gave none (watershed)."""
    return np.array([inst.score if inst.score is not None else np.nan for inst in instances], np.float64)


def _polygon(mask: np.ndarray) -> np.ndarray:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), np.float32)
    return max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float32)


class KaryoPipeline:
    """Segmentation -> geometry -> classification -> karyogram, on one spread at a time.

    Parameters
    ----------
    segmenter : callable or None
        ``segmenter(gray) -> list[Instance]``; ``None`` uses the watershed baseline.
    classifier : Classifier or None
        ``None`` leaves chromosomes unclassified (no karyotype call).
    device : str
    stages : dict, optional
        What each stage runs (recorded in every result's report).

    Examples
    --------
    >>> from karyopipe import KaryoPipeline
    >>> pipe = KaryoPipeline.from_pretrained()            # doctest: +SKIP
    >>> result = pipe("spread.png")                       # doctest: +SKIP
    >>> print(result.karyotype); result.save("out/spread")  # doctest: +SKIP
    """

    def __init__(self, segmenter=None, classifier=None, device: str = "cpu", stages: dict | None = None,
                 rescue_below: float | None = None, rescue_floor: float | None = None,
                 zoom_look: float | None = None, pairing: bool = False, hidden_look: bool = True,
                 second_segmenter=None):
        self.segmenter = segmenter
        # The last look before a loss is called (SECOND_SEGMENTER_SCORE_SCALE); None turns it off.
        self.second_segmenter = second_segmenter
        self.classifier = classifier
        self.device = device
        # Detections scored below rescue_below are not chromosomes of the cell; those from
        # rescue_floor up are held back for the second look before a loss is called
        # (RESCUE_FLOOR). rescue_floor None turns the second look off.
        self.rescue_below = rescue_below
        self.rescue_floor = rescue_floor
        # The zoomed look for merged chromosomes (ZOOM_LOOK); None turns it off.
        self.zoom_look = zoom_look
        # Before it, the parts of merged chromosomes the mask NMS hid (hidden_splits): no extra network pass.
        self.hidden_look = hidden_look
        # Homolog pairing by banding profile in the assignment (karyopipe.karyogram.pairing).
        self.pairing = pairing
        self.stages = dict(stages or {})
        self.stages.setdefault("segmentation", {"model": "mask_rcnn"} if segmenter is not None else
                               {"model": "watershed", "fallback": True, "reason": "no segmenter given"})
        self.stages.setdefault("classification", {"model": "hybrid_resnet"} if classifier is not None else
                               {"model": None, "fallback": True, "reason": "no classifier given"})
        self.stages.setdefault("geometry", {"model": "karyopipe.geometry.analyze_chromosome"})
        self.stages.setdefault("karyogram", {"model": "karyopipe.karyogram.assign_karyotype", "pairing": bool(pairing)})

    @classmethod
    def from_pretrained(cls, seg_weights=None, cls_weights=None, device: str = "cpu", verbose: bool = False,
                        precision: str = "float32", chromosome_width: float | None = None,
                        rescue: bool = True, zoom_look: float | None = None,
                        pairing: bool = False, hidden_look: bool = True,
                        second_segmenter=None) -> "KaryoPipeline":
        """Load the shipped (or given) weights; a missing file degrades that stage instead of failing.

        Parameters
        ----------
        seg_weights, cls_weights : str or Path, optional
            Default ``weights/mask_rcnn_karyotype_best.pth`` and
            ``weights/karyotype_classifier_best.pth``. A path given explicitly
            that does not exist is an error; a missing default is a fallback.
        device : {"cpu", "cuda"}
        verbose : bool
            Print each fallback to stderr.
        precision : {"float32", "bfloat16"}
            The networks' arithmetic (``InferenceSettings.precision``, ``Classifier.set_precision``):
            bfloat16 is faster on CPUs with native bfloat16, at a cost measured in BENCHMARKS.md.
        chromosome_width : float, optional
            Chromosome width in pixels (``InferenceSettings.chromosome_width``) instead of
            measuring it on each spread: for a fixed microscope, or a field where debris
            misleads the measurement. A report's ``scale.chromosome_width_px`` gives it.
        rescue : bool
            Before calling an autosomal loss, look at detections scored from
            :data:`RESCUE_FLOOR` up to the junk calibration's floor for the missing
            chromosome (weights with a junk calibration only; each one taken is
            flagged ``"rescued"`` and named in the report's warnings).
        zoom_look : float, optional
            With ``rescue``, if a loss remains, look again at the spread this many
            times larger (:data:`ZOOM_LOOK` is the factor measured) for touching
            chromosomes detected as one; each part taken is flagged ``"split"``.
            Off by default: see BENCHMARKS.md, End to end.
        hidden_look : bool
            With ``rescue``, if a loss remains, first try splitting kept objects
            into the parts the segmenter also detected inside them at a lower score
            (:func:`hidden_splits`; no extra network pass); parts taken are
            flagged ``"split"``. On by default: it found one more chromosome right
            on the val frames and changed nothing else (BENCHMARKS.md, End to end).
        pairing : bool
            Pair homologs by how alike their bands are, as well as by their
            classes (:mod:`karyopipe.karyogram.pairing`). Off by default: it
            costs accuracy under lab shifts (BENCHMARKS.md, Classification).
        second_segmenter : bool or str or Path, optional
            With ``rescue``, if a loss remains after every other look, let a
            second segmenter look at the spread (``True``: the shipped R18,
            ``weights/mask_rcnn_karyotype_r18.pth``); objects it finds that the
            first did not may fill the loss under the second look's rules, each
            flagged ``"rescued"`` (:meth:`second_segmenter_view`). Opt-in: see
            BENCHMARKS.md, End to end.
        """
        import sys

        from karyopipe.weights import (
            CLASSIFICATION_WEIGHTS,
            SEGMENTATION_R18_WEIGHTS,
            SEGMENTATION_WEIGHTS,
            weights_path,
        )

        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda: no CUDA device is available (use --device cpu)")
        stages: dict = {}
        segmenter = classifier = advisor = None
        rescue_below = rescue_floor = zoom = None
        hidden = False
        if zoom_look is not None and not zoom_look > 1:
            raise ValueError(f"zoom_look must be a factor above 1, got {zoom_look}")
        seg_path = weights_path(seg_weights, SEGMENTATION_WEIGHTS)
        if seg_weights and not seg_path.is_file():
            raise FileNotFoundError(f"{seg_path}: segmentation weights not found")
        if seg_path.is_file():
            from karyopipe.segmentation import Segmenter

            segmenter = Segmenter.from_pretrained(seg_path, device=device, precision=precision,
                                                  chromosome_width=chromosome_width)
            stages["segmentation"] = {"model": "mask_rcnn", "weights": str(seg_path), "precision": precision,
                                      **_card(seg_path)}
            if chromosome_width:
                stages["segmentation"]["chromosome_width"] = float(chromosome_width)
            # Weights calibrated for junk (karyopipe calibrate-junk) keep weaker detections: the
            # assignment leaves out the debris among them by their score, and finds more chromosomes.
            keep_from = (segmenter.config.get("junk_calibration") or {}).get("score_thresh")
            if keep_from is not None:
                stages["segmentation"]["score_thresh"] = rescue_below = float(keep_from)
                if rescue and RESCUE_FLOOR < rescue_below:
                    rescue_floor = stages["segmentation"]["rescue_floor"] = RESCUE_FLOOR
                    if zoom_look:
                        zoom = stages["segmentation"]["zoom_look"] = float(zoom_look)
                    if hidden_look:
                        hidden = stages["segmentation"]["hidden_look"] = True
                    if second_segmenter is not None and second_segmenter is not False:
                        second_path = weights_path(SEGMENTATION_R18_WEIGHTS if second_segmenter is True
                                                   else second_segmenter, SEGMENTATION_R18_WEIGHTS)
                        if not second_path.is_file():
                            raise FileNotFoundError(f"{second_path}: second segmenter's weights not found")
                        # Its objects count from the rescue floor once scaled down, so it keeps them from there.
                        advisor = Segmenter.from_pretrained(
                            second_path, device=device, precision=precision, chromosome_width=chromosome_width,
                            score_thresh=min(1.0, RESCUE_FLOOR / SECOND_SEGMENTER_SCORE_SCALE))
                        stages["segmentation"]["second_segmenter"] = {"weights": str(second_path),
                                                                      **_card(second_path)}
                segmenter.configure(score_thresh=rescue_below if rescue_floor is None else rescue_floor)
        else:
            stages["segmentation"] = {"model": "watershed", "fallback": True,
                                      "reason": f"segmentation weights missing: {seg_path} - using the watershed baseline"}
        cls_path = weights_path(cls_weights, CLASSIFICATION_WEIGHTS)
        if cls_weights and not cls_path.is_file():
            raise FileNotFoundError(f"{cls_path}: classifier weights not found")
        if cls_path.is_file():
            from karyopipe.classification import Classifier

            classifier = Classifier.from_pretrained(cls_path, device=device, precision=precision)
            stages["classification"] = {"model": "hybrid_resnet", "weights": str(cls_path), **_card(cls_path)}
        else:
            stages["classification"] = {"model": None, "fallback": True,
                                        "reason": f"classifier weights missing: {cls_path} - chromosomes left unclassified"}
        if verbose:
            for name, info in stages.items():
                if info.get("fallback"):
                    print(f"karyopipe: {info['reason']}", file=sys.stderr)
        return cls(segmenter, classifier, device, stages, rescue_below=rescue_below, rescue_floor=rescue_floor,
                   zoom_look=zoom, pairing=pairing, hidden_look=hidden, second_segmenter=advisor)

    # -- stages ---------------------------------------------------------------
    @staticmethod
    def load(image_or_path, polarity: str | None = None) -> tuple[np.ndarray, str, str]:
        """Canonical grey image, detected polarity and source name of a path or array.

        The image's background is brought to at most
        :data:`karyopipe.io.BACKGROUND_CEILING` (:func:`karyopipe.io.standardize_background`).
        Raises :class:`karyopipe.io.ImageReadError` (naming the file) for bad files.
        """
        return KaryoPipeline._load(image_or_path, polarity)[:3]

    @staticmethod
    def _load(image_or_path, polarity: str | None = None) -> tuple[np.ndarray, str, str, float]:
        """:meth:`load`, and the background level the image had before it was standardized."""
        from karyopipe.io import (
            MAX_PIXELS,
            ImageReadError,
            background_level,
            normalize_polarity,
            read_image,
            standardize_background,
            too_large_message,
        )

        if isinstance(image_or_path, (str, Path)):
            source = str(image_or_path)
            image = read_image(image_or_path)
        else:
            source = "<array>"
            image = np.asarray(image_or_path)
        if image.ndim not in (2, 3) or image.shape[0] < 8 or image.shape[1] < 8:
            raise ImageReadError(source, f"not a spread image (shape {image.shape})")
        if image.shape[0] * image.shape[1] > MAX_PIXELS:
            raise ImageReadError(source, too_large_message(f"{image.shape[1]}x{image.shape[0]} pixels"))
        if image.dtype.kind == "f" and image.ndim == 2:
            gray = np.clip(np.nan_to_num(image.astype(np.float32)), 0, 1)
            gray, pol = normalize_polarity(gray, polarity)
        else:
            gray, pol = normalize_polarity(image, polarity)
        level = background_level(gray)
        return standardize_background(gray, level=level), pol, source, level

    def segment(self, gray: np.ndarray) -> list:
        """Chromosome instances (:class:`karyopipe.data.Instance`, full-image ``mask``) of a canonical image."""
        return self.segment_with_reserve(gray)[0]

    def segment_with_reserve(self, gray: np.ndarray):
        """``(instances, reserve)``: the chromosomes, and a :class:`Reserve` of what was kept back.

        ``reserve()`` returns the detections scored in ``[rescue_floor,
        rescue_below)`` that do not lie mostly (:data:`RESCUE_MAX_OVERLAP` of
        their area) on a kept instance, or ``[]`` when the second look is off;
        ``reserve.hidden()`` the detections from ``rescue_below`` up that the
        mask NMS dropped for lying inside a kept one (a :class:`Segmenter`'s only).
        A :class:`karyopipe.segmentation.Segmenter` draws their outlines only
        when they are asked for: most cells have no loss to look at.
        """
        if self.segmenter is None:
            from karyopipe.segmentation import segment_watershed

            return list(segment_watershed(gray)), Reserve()
        if self.rescue_below is None or self.rescue_floor is None:
            found = list(self.segmenter(gray))
            if self.rescue_below is not None:
                found = [inst for inst in found if inst.score is None or inst.score >= self.rescue_below]
            return found, Reserve()
        if hasattr(self.segmenter, "detect") and hasattr(self.segmenter, "instances"):
            # The hidden parts are only asked for when the hidden look may use them.
            found = self.segmenter.detect(gray, with_hidden=self.hidden_look)
            detections, hidden = found if self.hidden_look else (found, [])
            detections = [d for d in detections if d.category == "chromosome"]
            kept = self.segmenter.instances(gray, [d for d in detections if d.score >= self.rescue_below])
            weak = [d for d in detections if d.score < self.rescue_below]
            hidden = [d for d in hidden if d.category == "chromosome" and d.score >= self.rescue_below]

            def weak_instances():
                return self.segmenter.instances(gray, weak)

            def hidden_instances():
                return self.segmenter.instances(gray, hidden)
        else:  # any other segmenter has outlined everything already
            found = list(self.segmenter(gray))
            kept = [inst for inst in found if inst.score is None or inst.score >= self.rescue_below]

            def weak_instances():
                return [inst for inst in found if inst.score is not None and inst.score < self.rescue_below]

            hidden_instances = list  # its NMS is its own: nothing is known to lie hidden inside a kept object

        def reserve():
            return objects_off_kept(weak_instances(), kept, gray.shape[:2], self.rescue_floor)

        return kept, Reserve(reserve, hidden_instances)

    def second_look(self, gray, instances, geometries, log_probs, call, reserve):
        """Fill an autosomal loss of ``call`` from the reserve detections, if that makes a better call.

        ``reserve`` is :meth:`segment_with_reserve`'s function: it is called
        only when ``call`` has an autosomal loss. Every reserve object is
        classified against the cell (measured by the kept detections, whose
        log-probabilities stay as they were) and the
        karyotype is assigned again with all of them; those the assignment
        uses join the cell. The new call is taken only if it has fewer
        autosomal losses, no gain the first call lacked and the same sex
        complement, and only if the classifier lists each object taken among its
        :data:`RESCUE_TOP_K` likeliest classes as the chromosome it fills in.

        Returns
        -------
        (instances, geometries, log_probs, call, rescued) or None
            The cell with the rescued objects appended; ``rescued`` their indices.
        """
        if call is None or not _autosomal_losses(call):
            return None
        reserve = reserve()
        if not reserve:
            return None
        extra = self.analyze(gray, reserve)
        every = list(instances) + list(reserve)
        every_lp = self.classify(list(geometries) + extra, detection_scores(every))
        every_lp = np.concatenate([log_probs, every_lp[len(instances):]])
        trial = self.assign(every_lp, list(geometries) + extra, self.junk_prior(every))
        n = len(instances)
        used = [j for j in range(len(reserve)) if trial.labels[n + j] != 0]
        # Only what the classifier itself holds likely to be the missing chromosome: the assignment
        # would also press an object it reads as an X into an empty 21 slot rather than call a loss.
        if not used or not all(_among_likeliest(trial.labels[n + j], every_lp[n + j]) for j in used):
            return None
        # The objects the assignment left as junk go; the call is made again without them.
        instances = list(instances) + [reserve[j] for j in used]
        geometries = list(geometries) + [extra[j] for j in used]
        log_probs = every_lp[list(range(n)) + [n + j for j in used]]
        new = self.assign(log_probs, geometries, self.junk_prior(instances))
        if not _mends(new, call):
            return None
        return instances, geometries, log_probs, new, list(range(n, len(instances)))

    def zoomed_view(self, gray) -> list:
        """The chromosomes the segmenter finds with the spread :attr:`zoom_look` times larger.

        Returns full-resolution instances scored from ``rescue_below`` up (the
        cell's own threshold), or ``[]`` when the look is off or the segmenter
        cannot zoom (a stand-in without ``detect(gray, zoom=...)``).
        """
        seg = self.segmenter
        if (self.zoom_look is None or self.rescue_below is None
                or not all(hasattr(seg, a) for a in ("detect", "instances"))):
            return []
        detections = [d for d in seg.detect(gray, zoom=self.zoom_look)
                      if d.category == "chromosome" and d.score >= self.rescue_below]
        return seg.instances(gray, detections)

    def second_segmenter_view(self, gray, kept) -> list:
        """The objects the second segmenter finds that the first did not, as weak detections.

        Returns its chromosome instances, outlined by its own weights, whose
        score times :data:`SECOND_SEGMENTER_SCORE_SCALE` reaches the rescue
        floor and which lie at most :data:`RESCUE_MAX_OVERLAP` on the ``kept``
        instances, scored that way; ``[]`` when the look is off.
        """
        seg = self.second_segmenter
        if seg is None or self.rescue_floor is None:
            return []
        found = seg(gray)
        for inst in found:
            inst.score = float(inst.score) * SECOND_SEGMENTER_SCORE_SCALE
        return objects_off_kept(found, kept, gray.shape[:2], self.rescue_floor)

    def split_look(self, gray, instances, geometries, log_probs, call, candidates=None):
        """Split kept objects a second view sees as touching chromosomes, if that mends a loss of ``call``.

        ``candidates`` are ``(object, parts)`` pairs, such as :func:`hidden_splits`
        gives; by default those :func:`merged_objects` finds in :meth:`zoomed_view`.
        Each candidate is tried on its own: it is replaced by its parts, the cell is classified and
        assigned again, and the split is taken under :meth:`second_look`'s rules
        (fewer autosomal losses, no new gain, the same sex; every part assigned
        a chromosome among its :data:`RESCUE_TOP_K` likeliest classes). The best
        split is taken, and the others are tried again while a loss remains.

        Returns
        -------
        (instances, geometries, log_probs, call, parts) or None
            ``parts``: the instances that replaced merged objects.
        """
        if call is None or not _autosomal_losses(call):
            return None
        if candidates is None:
            if self.zoom_look is None:
                return None
            candidates = merged_objects(instances, self.zoomed_view(gray))
        taken: list = []
        while candidates and _autosomal_losses(call):
            trials = []
            for merged, parts in candidates:
                i = next(k for k, inst in enumerate(instances) if inst is merged)
                objects = instances[:i] + instances[i + 1:] + parts
                geoms = geometries[:i] + geometries[i + 1:] + self.analyze(gray, parts)
                lp = self.classify(geoms, detection_scores(objects))
                new = self.assign(lp, geoms, self.junk_prior(objects))
                first = len(objects) - len(parts)
                if _mends(new, call) and all(new.labels[j] != 0 and _among_likeliest(new.labels[j], lp[j])
                                             for j in range(first, len(objects))):
                    # Of two splits that mend as much, the one whose parts the classifier is surer of.
                    doubt = -float(np.mean([lp[j, new.labels[j] - 1] for j in range(first, len(objects))]))
                    trials.append((len(_autosomal_losses(new)), doubt, merged, objects, geoms, lp, new, parts))
            if not trials:
                break
            _, _, merged, instances, geometries, log_probs, call, parts = min(trials, key=lambda t: t[:2])
            taken += parts
            candidates = [(m, p) for m, p in candidates if m is not merged]
        if not taken:
            return None
        return instances, geometries, log_probs, call, taken

    @staticmethod
    def analyze(gray: np.ndarray, instances) -> list:
        """Geometry of each instance (:func:`karyopipe.geometry.analyze_in_image`), axes in input pixels."""
        from karyopipe.geometry import analyze_in_image

        return analyze_in_image(gray, [inst.mask for inst in instances], pad=_PAD)

    def classify(self, geometries, scores=None) -> np.ndarray | None:
        """(n, 24) log-probabilities, or None without a classifier.

        ``scores`` (detection scores, one per geometry) pick the objects the
        cell is measured by: those from :data:`REFERENCE_SCORE`, if at least
        :data:`MIN_REFERENCE_OBJECTS`; otherwise, or without scores, all.
        """
        if self.classifier is None or not geometries:
            return None
        reference = None
        if scores is not None:
            sure = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0) >= REFERENCE_SCORE
            if MIN_REFERENCE_OBJECTS <= sure.sum() < len(sure):
                reference = sure
        if reference is None:  # a classifier of one's own need not know about references
            return np.asarray(self.classifier.predict_cell(list(geometries)), np.float32)
        return np.asarray(self.classifier.predict_cell(list(geometries), reference=reference), np.float32)

    def assign(self, log_probs, geometries, junk_prior=None):
        """:class:`karyopipe.karyogram.KaryotypeCall` of one cell, or None without log-probs.

        ``junk_prior``: one value or one per object (:meth:`junk_prior`); default
        :data:`karyopipe.karyogram.assign.JUNK_PRIOR`. With :attr:`pairing`, how
        alike the chromosomes' bands are pairs homologs too
        (:mod:`karyopipe.karyogram.pairing`).
        """
        if log_probs is None:
            return None
        from karyopipe.karyogram import assign_karyotype, geometry_measures
        from karyopipe.karyogram.assign import JUNK_PRIOR

        lengths, ci, pc = geometry_measures(geometries)
        odds = None
        if self.pairing and geometries:
            from karyopipe.classification.preprocess import geometry_images
            from karyopipe.karyogram.pairing import banding_profiles, homolog_log_odds

            odds = homolog_log_odds(banding_profiles(geometry_images(geometries)))
        return assign_karyotype(log_probs, lengths, ci, polarity_confidence=pc,
                                junk_prior=JUNK_PRIOR if junk_prior is None else junk_prior, pair_log_odds=odds)

    def junk_prior(self, instances):
        """Per-object junk priors from the detection scores, when the segmenter's weights carry a calibration.

        ``None`` otherwise (no segmenter, the watershed fallback, or weights
        not calibrated by ``karyopipe calibrate-junk``).
        """
        calibration = getattr(self.segmenter, "config", {}).get("junk_calibration") if self.segmenter else None
        if not calibration or not instances:
            return None
        from karyopipe.karyogram import junk_prior_from_scores

        return junk_prior_from_scores(detection_scores(instances), calibration["intercept"], calibration["slope"])

    # -- all together ---------------------------------------------------------
    def __call__(self, image_or_path, polarity: str | None = None) -> KaryotypeResult:
        """Run every stage on one spread (path or array) and return a :class:`KaryotypeResult`."""
        timings: dict[str, float] = {}
        warnings = [info["reason"] for info in self.stages.values() if info.get("fallback") and info.get("reason")]
        t = time.perf_counter()
        gray, pol, source, background = self._load(image_or_path, polarity)
        if background > BACKGROUND_CEILING:
            warnings.append(
                f"{source}: its background reads {background:.2f} (0 = black, 1 = white, after polarity "
                f"normalisation), above the {BACKGROUND_CEILING:g} of every spread the models were trained on: a dim "
                f"lamp, a camera offset or a low exposure; it was brought to {BACKGROUND_CEILING:g} before "
                "segmentation. Check the count and the outlines")
        if isinstance(image_or_path, (str, Path)):
            from karyopipe.io import image_pages

            pages = image_pages(image_or_path)
            if pages > 1:
                warnings.append(f"{source}: the file holds {pages} images; only the first was read "
                                "(save each spread as a file of its own to karyotype it)")
        timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        instances, reserve = self.segment_with_reserve(gray)
        instances = [inst for inst in instances if inst.mask is not None and inst.mask.any()]
        timings["segmentation"] = time.perf_counter() - t

        t = time.perf_counter()
        geometries = self.analyze(gray, instances)
        timings["geometry"] = time.perf_counter() - t

        implausible = len(instances) > MAX_OBJECTS_FOR_A_CALL
        t = time.perf_counter()
        log_probs = None if implausible else self.classify(geometries, detection_scores(instances))
        timings["classification"] = time.perf_counter() - t

        t = time.perf_counter()
        call, rescued, split_parts, looking = None, [], [], 0.0
        if not instances:
            statement = f"{source}: no chromosomes found - check the image is a metaphase spread and its polarity"
            warnings.append(statement)
        elif implausible:
            statement = (f"{source}: {len(instances)} objects found, more than any metaphase holds "
                         f"(a near-tetraploid cell has 92) - debris, an interphase field or a wrong scale? "
                         f"Objects left unclassified, no karyotype call.")
            scale = _scale_record(instances)
            if scale.get("chromosome_width_px") and scale.get("working_scale", 1.0) != 1.0:
                # Dust measured as chromosomes sets the scale too; say which one was used and how to override it.
                statement += (f" The chromosomes were measured {scale['chromosome_width_px']:g} px wide, so the spread "
                              f"was looked at {scale['working_scale']:g} times its size; if they are not, pass "
                              "--chromosome-width.")
            warnings.append(statement)
        else:
            call = self.assign(log_probs, geometries, self.junk_prior(instances))
            # The second look segments and classifies again, for a cell with a loss only: its own
            # line in the timings, so that a slow spread shows why.
            t_look = time.perf_counter()
            second = self.second_look(gray, instances, geometries, log_probs, call, reserve)
            rescued_objects, parts = [], []
            if second is not None:
                instances, geometries, log_probs, call, rescued = second
                rescued_objects = [instances[i] for i in rescued]
            hidden_parts = []
            if self.hidden_look and call is not None and _autosomal_losses(call):
                split = self.split_look(gray, instances, geometries, log_probs, call,
                                        candidates=hidden_splits(instances, reserve.hidden()))
                if split is not None:
                    instances, geometries, log_probs, call, hidden_parts = split
            split = self.split_look(gray, instances, geometries, log_probs, call)
            if split is not None:
                instances, geometries, log_probs, call, parts = split
            advised = []
            if self.second_segmenter is not None and call is not None and _autosomal_losses(call):
                kept_now = list(instances)
                third = self.second_look(gray, instances, geometries, log_probs, call,
                                         lambda: self.second_segmenter_view(gray, kept_now))
                if third is not None:
                    instances, geometries, log_probs, call, taken = third
                    advised = [instances[i] for i in taken]
            looking = time.perf_counter() - t_look
            # Indices only now: a split moves the objects after the one it replaces.
            rescued = [i for i, inst in enumerate(instances) if any(inst is r for r in rescued_objects)]
            found_by_second = [i for i, inst in enumerate(instances) if any(inst is a for a in advised)]
            split_parts = [i for i, inst in enumerate(instances) if any(inst is p for p in parts)]
            hidden_split = [i for i, inst in enumerate(instances) if any(inst is p for p in hidden_parts)]
            if rescued:
                warnings.append(
                    f"{source}: {describe_objects(rescued, call.labels, instances)} kept as "
                    + ("chromosomes" if len(rescued) > 1 else "a chromosome")
                    + " instead of calling a loss: check " + ("them" if len(rescued) > 1 else "it"))
            if found_by_second:
                warnings.append(f"{source}: {describe_objects(found_by_second, call.labels)} found by the second "
                                "segmenter, where the first kept no object: check " +
                                ("them" if len(found_by_second) > 1 else "it"))
            if hidden_split:
                warnings.append(
                    f"{source}: {describe_objects(hidden_split, call.labels)}"
                    " are parts of touching chromosomes first detected as one, split where the segmenter also saw "
                    "one of them apart at a lower score, instead of calling a loss: check them")
            if split_parts:
                warnings.append(
                    f"{source}: {describe_objects(split_parts, call.labels)}"
                    f" are parts of touching chromosomes first detected as one, split in a view {self.zoom_look:g}x "
                      "larger instead of calling a loss: check them")
            split_parts = sorted(split_parts + hidden_split)
            rescued = sorted(rescued + found_by_second)  # flagged "rescued" alike: a weak object filling a loss
            statement = call.statement if call is not None else (
                f"{len(instances)} objects segmented; not classified (no classifier weights), no karyotype call.")
        timings["karyogram"] = time.perf_counter() - t - looking
        timings["second_look"] = looking

        frame = picture_frame(gray)
        at_edge = [i for i, inst in enumerate(instances) if touches_picture_edge(inst.mask, frame)]
        assigned_at_edge = [i for i in at_edge if call is not None and call.labels[i]]
        if assigned_at_edge:
            # A cut chromosome reads short and may take a smaller one's slot; the call stands, the reader is told.
            warnings.append(
                f"{source}: at the image edge, where part of a chromosome may lie outside the picture and its length "
                f"and class are less sure: {describe_objects(assigned_at_edge, call.labels)}; check them")

        weak = weak_call_objects(instances, call)
        if weak:
            # The segmenter breaks some chromosomes in two and a piece can read as a Y (karyopipe
            # eval-fragments measures how often); such pieces are mostly weak detections, whole chromosomes rarely.
            warnings.append(
                f"{source}: the call rests on weak detections: {describe_objects(weak, call.labels, instances)}"
                "; one may be a piece of a broken chromosome or debris: check before reporting")

        lengths = np.array([g.length_px for g in geometries], float)
        total = float(np.nansum(lengths[lengths > 0])) if len(lengths) else 0.0
        chromosomes = []
        for i, (inst, g) in enumerate(zip(instances, geometries)):
            c = ChromosomeResult(
                id=i, bbox=tuple(float(v) for v in (inst.bbox or _bbox(inst.mask))), polygon=_polygon(inst.mask),
                mask=inst.mask, score=float(inst.score) if inst.score is not None else float("nan"),
                length_px=float(g.length_px), relative_length=100.0 * g.length_px / total if total > 0 else float("nan"),
                centromere_index=float(g.centromere_index), polarity_confidence=float(g.polarity_confidence),
                flags=list(g.flags), geometry=g,
            )
            if log_probs is not None:
                probs = np.exp(log_probs[i])
                top = np.argsort(-probs)[:3]
                c.top3 = [(CLASS_NAMES[k], round(float(probs[k]), 4)) for k in top]
            if call is not None:
                c.label = int(call.labels[i])
                c.confidence = float(call.confidence[i])
                c.flags = sorted(set(c.flags) | set(call.flags[i]) | ({"rescued"} if i in rescued else set())
                               | ({"split"} if i in split_parts else set()))
            if i in at_edge:
                c.flags = sorted(set(c.flags) | {"at_image_edge"})
            if i in weak:
                c.flags = sorted(set(c.flags) | {"weak_detection"})
            chromosomes.append(c)
        total_time = sum(timings.values())
        timings = {k: round(v, 4) for k, v in timings.items()}
        timings["total"] = round(total_time, 4)
        return KaryotypeResult(
            source=source, image=gray, polarity=pol, chromosomes=chromosomes,
            karyotype=call.karyotype if call is not None else "", statement=statement,
            abnormalities=[_abn(a) for a in (call.abnormalities if call is not None else [])],
            possible_abnormalities=[_abn(a) for a in (call.possible if call is not None else [])],
            sex=call.sex if call is not None else "", call=call, timings=timings,
            sex_confidence=float(call.sex_confidence) if call is not None and call.callable else float("nan"),
            stages={k: dict(v) for k, v in self.stages.items()}, warnings=warnings,
            scale=_scale_record(instances),
        )


def describe_objects(indices, labels, instances=None) -> str:
    """The objects a warning names, as a reader checks them on the overlay.

    ``"object 3 (chromosome 21), object 7 (chromosome Y)"``; given
    ``instances``, each also carries its detection score
    (``"object 3 (chromosome 21, detection score 0.62)"``).
    """
    described = []
    for i in indices:
        detail = f"chromosome {CLASS_NAMES[int(labels[i]) - 1]}"
        if instances is not None:
            detail += f", detection score {instances[i].score:.2f}"
        described.append(f"object {i} ({detail})")
    return ", ".join(described)


def weak_call_objects(instances, call) -> list[int]:
    """Indices of the weak detections among the objects that make the call male or abnormal.

    Those objects: every Y, and every object of a class the call holds more
    copies of than a normal cell (a gain, a third X). Weak: scored below
    :data:`REFERENCE_SCORE`, the score from which the pipeline measures the
    cell by a detection. ``[]`` without a call.
    """
    if call is None or not call.callable:
        return []
    from karyopipe.classes import X, Y
    from karyopipe.karyogram.iscn import count_changes

    counts = call.counts or {}
    gained = {k for k, sign in count_changes(counts, call.ploidy) if sign > 0}
    extra_x = counts.get(X, 0) > (1 if counts.get(Y) else 2)
    decisive = {Y} | gained | ({X} if extra_x else set())
    scores = np.nan_to_num(detection_scores(instances), nan=1.0)
    return [i for i in range(len(instances)) if call.labels[i] in decisive and scores[i] < REFERENCE_SCORE]


def merged_objects(instances, view) -> list[tuple]:
    """Kept objects that a second view splits into parts: ``[(instance, parts), ...]``.

    A part is an instance of ``view`` lying mostly inside the object
    (:data:`SPLIT_INSIDE` of its area) without covering most of it; an object
    is split when two or more parts together cover :data:`SPLIT_COVER` of it.
    A part is given to one object only (the first, in the order of ``instances``).
    """
    found, used = [], set()
    boxes = [(inst.bbox or _bbox(inst.mask)) if inst.mask.any() else None for inst in view]
    for inst in instances:
        area = int(inst.mask.sum())
        if not area:
            continue
        x0, y0, x1, y1 = inst.bbox or _bbox(inst.mask)
        parts = []
        for k, z in enumerate(view):
            # Whole-image masks: the boxes rule out most pairs before their pixels are compared.
            if k in used or boxes[k] is None or boxes[k][0] >= x1 or boxes[k][2] <= x0 or boxes[k][1] >= y1 \
                    or boxes[k][3] <= y0:
                continue
            inside = int((z.mask & inst.mask).sum())
            if inside >= SPLIT_INSIDE * z.mask.sum() and inside < SPLIT_COVER * area:
                parts.append(k)
        if len(parts) < 2:
            continue
        union = np.logical_or.reduce([view[k].mask for k in parts])
        if (union & inst.mask).sum() >= SPLIT_COVER * area:
            used.update(parts)
            found.append((inst, [view[k] for k in parts]))
    return found


def objects_off_kept(objects, kept, shape, floor: float) -> list:
    """The ``objects`` scored from ``floor`` up that a look may add to the cell's ``kept`` instances.

    An object lying more than :data:`RESCUE_MAX_OVERLAP` of its area on kept
    instances is a piece of them, not a missed chromosome; one without a mask
    cannot be placed and is left out too. ``shape`` is the spread's (H, W).
    """
    covered = np.zeros(shape, bool)
    for inst in kept:
        covered |= inst.mask
    return [inst for inst in objects if inst.score >= floor and inst.mask is not None and inst.mask.any()
            and (inst.mask & covered).sum() <= RESCUE_MAX_OVERLAP * inst.mask.sum()]


def hidden_splits(instances, hidden) -> list[tuple]:
    """Kept objects that the segmenter's hidden detections split into parts: ``[(instance, parts), ...]``.

    ``hidden`` are detections the mask NMS dropped for lying inside a kept
    object (:meth:`Reserve.hidden`). An object with two or more of them that
    cover it is split as :func:`merged_objects` splits it; an object with
    one is split into that part and the rest of the object (its largest
    connected piece after a one-pixel opening, which removes the rim the two
    outlines leave), if the rest is at least :data:`SPLIT_REMAINDER` of it.
    """
    from scipy import ndimage as ndi

    from karyopipe.data import Instance

    found = merged_objects(instances, hidden)
    split = {id(inst) for inst, _ in found}
    for inst in instances:
        area = int(inst.mask.sum())
        if id(inst) in split or not area:
            continue
        inside = [h for h in hidden if h.mask is not None and h.mask.any()
                  and SPLIT_INSIDE * h.mask.sum() <= (h.mask & inst.mask).sum() < SPLIT_COVER * area]
        if len(inside) != 1:
            continue
        part = inside[0]
        rest = ndi.binary_opening(inst.mask & ~part.mask, np.ones((3, 3), bool))
        pieces, n = ndi.label(rest)
        if not n:
            continue
        rest = pieces == 1 + int(np.argmax(ndi.sum(rest, pieces, range(1, n + 1))))
        if rest.sum() < SPLIT_REMAINDER * area:
            continue
        found.append((inst, [part, Instance(mask=rest, bbox=_bbox(rest), score=inst.score, category=inst.category)]))
    return found


def _among_likeliest(label: int, log_probs) -> bool:
    """Whether class number ``label`` (1..24) is among the :data:`RESCUE_TOP_K` likeliest of one object's log-probs."""
    return label - 1 in np.argsort(-log_probs)[:RESCUE_TOP_K]


def _mends(new, call) -> bool:
    """Whether ``new`` calls fewer autosomal losses than ``call``, with no new gain and the same sex."""
    gains = {a.description for a in call.abnormalities if a.kind != "loss"}
    return (new is not None and new.sex == call.sex and len(_autosomal_losses(new)) < len(_autosomal_losses(call))
            and {a.description for a in new.abnormalities if a.kind != "loss"} <= gains)


def _autosomal_losses(call) -> list:
    return [a for a in call.abnormalities if a.kind == "loss" and a.number is not None and a.number <= 22]


def _scale_record(instances) -> dict:
    extra = (getattr(instances[0], "extra", None) or {}) if instances else {}
    if "scale" not in extra:  # the watershed fallback does not rescale
        return {}
    width = extra.get("chromosome_width")
    return {"chromosome_width_px": round(float(width), 2) if width else None, "working_scale": round(float(extra["scale"]), 4)}


def _abn(a) -> dict:
    return {"description": a.description, "confidence": round(float(a.confidence), 4), "kind": a.kind, "number": a.number}


def _bbox(mask: np.ndarray) -> tuple:
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _card(path: Path) -> dict:
    """Which weights file ran: size and modification time identify the version without loading it twice."""
    import datetime as dt

    st = path.stat()
    return {"bytes": st.st_size, "modified": dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc).isoformat(timespec="seconds")}
