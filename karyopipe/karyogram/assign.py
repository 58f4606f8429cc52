"""Global assignment of a cell's chromosomes to karyotype slots.

Classifying each chromosome on its own lets two objects claim the same class
while another class goes empty. Here the whole cell is solved at once as a
rectangular assignment problem (:func:`scipy.optimize.linear_sum_assignment`)
between objects and *slots*: ``ploidy`` normal slots per autosome, one extra
slot per autosome for a gain, the sex-chromosome slots of a complement
(``XX``, ``XY``, ``X``, ``XXY``, ``XYY``, ``XXX``, and the triploid ``XXX``,
``XXY``, ``XYY``) and one "unassigned" slot per object. Every hypothesis is
solved and the one with the lowest cost, its log prior included, wins.

Costs are negative log-likelihoods in nats, so penalties are log priors:

* an object in class ``k``: ``-log p(k | object)`` plus a Gaussian penalty on its
  log length relative to the cell scale (``CHROMOSOMES[k].relative_length``)
  and on its centromere index;
* an empty normal slot (a lost copy): ``-log loss_prior``;
* a filled gain slot (an extra copy): ``-log gain_prior``;
* an object left unassigned (junk): ``-log junk_prior``, plus what the
  classifier and morphology say about a junk object (no class preferred,
  any length), on the same scale as the chromosome costs;
* a sex complement or ploidy: ``-log`` of its prior.

Confidences are min-marginals: the cost of the best solution that avoids the
call, turned into a probability, ``1 / (1 + exp(-delta))``.

Examples
--------
>>> import numpy as np
>>> from karyopipe.karyogram import assign_karyotype
>>> from karyopipe.classes import CHROMOSOMES
>>> truth = [k for k in range(1, 23) for _ in range(2)] + [23, 24]
>>> log_probs = np.full((46, 24), np.log(0.01 / 23))
>>> log_probs[np.arange(46), np.array(truth) - 1] = np.log(0.99)
>>> lengths = np.array([CHROMOSOMES[k].relative_length * 10 for k in truth])
>>> assign_karyotype(log_probs, lengths).karyotype
'46,XY'
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import log_softmax

from karyopipe.classes import AUTOSOMES, CHROMOSOMES, NUM_CLASSES, X, Y, class_name
from karyopipe.karyogram.iscn import karyotype_string

__all__ = ["Abnormality", "KaryotypeCall", "Hypothesis", "HYPOTHESES", "assign_karyotype", "geometry_measures",
           "junk_prior_from_scores", "MIN_OBJECTS", "MAX_OBJECTS"]

MIN_OBJECTS = 35
MAX_OBJECTS = 95

# Priors of the cell-level hypotheses. Constitutional sex aneuploidies from
# live-birth prevalence: 45,X ~1/2500 girls, 47,XXY ~1/600 boys, 47,XYY ~1/1000
# boys, 47,XXX ~1/1000 girls. A single cell also shows 45,X when its second X or
# its Y was lost in spreading (like any chromosome, ~1e-3) or with age (loss of
# Y), so "X" adds that artefact rate. Triploidy is ~1-2 % of recognised
# conceptions but rare in other referrals: 1e-3 split by its sex ratios.
_SEX_LOSS = 1e-3
HYPOTHESIS_PRIORS: dict[str, float] = {
    "XX": 0.499, "XY": 0.499,
    "X": 2e-4 + 0.998 * _SEX_LOSS, "XXY": 8e-4, "XYY": 5e-4, "XXX": 5e-4,
    "3n,XXY": 6e-4, "3n,XXX": 3.7e-4, "3n,XYY": 3e-5,
}
# Gain of one autosome, per chromosome, from live-birth prevalence: trisomy 21
# ~1/700, 18 ~1/5000, 13 ~1/10000; any other full trisomy is rarely viable
# (seen in miscarriage and mosaics), so 1e-5. Pass a float or dict to change them.
GAIN_PRIOR: dict[int, float] = {k: 1e-5 for k in AUTOSOMES} | {21: 1.4e-3, 18: 2e-4, 13: 1e-4}
# A constitutional autosomal monosomy is lethal, but a chromosome lost while
# spreading the cell is common (a few percent of cells): ~1e-3 per chromosome.
LOSS_PRIOR: dict[int, float] = {k: 1e-3 for k in AUTOSOMES}
# An object passed as a chromosome that is not one (debris, a fragment, two
# touching chromosomes taken as one), when nothing more is known about it:
# 1e-4, for ground-truth masks or a clean segmentation. The pipeline does know
# more: its segmenter's detection score, calibrated on training frames
# (``karyopipe calibrate-junk``, :func:`junk_prior_from_scores`). There a flat
# prior fails both ways: the shipped segmenter passes 4.5 % such objects on
# its training frames, yet at that flat rate a real third 21 goes to junk.
JUNK_PRIOR = 1e-4
# Per-object priors are kept inside these bounds: no detection score makes an
# object certainly a chromosome or certainly junk.
JUNK_PRIOR_BOUNDS = (1e-4, 0.9)
# An object left out as junk that is at least this likely a third copy of its
# class is named in the statement ("possible +13"): junk is the likelier
# reading, but a missed trisomy costs more than a second look.
POSSIBLE_GAIN_P = 0.05
# The Y alone decides a normal cell's sex, and its look is distinctive: the shipped
# classifier scores real Ys >= 0.98 on the BioImLab training and val crops (27 of 27)
# and >= 0.6 on 90 % of the gband612 val Ys. What fills a Y slot on weaker evidence in a
# segmented spread is mostly a G-group chromosome, a fragment or debris that lets an X
# slot take a chromosome whose own homolog was missed. The Y column of the classifier's
# cost is therefore multiplied by this weight (the likelihood raised to this power):
# negligible for a true Y (0.98 -> 0.08 nats), decisive against a 0.2 one (1.6 -> 6.4).
Y_EVIDENCE_WEIGHT = 4.0
# Below this probability a chromosome's class, or the cell's sex, is called uncertain and named for a check.
UNCERTAIN_BELOW = 0.9
# An object given a class the classifier, reading it alone, put below this probability (a merged pair
# read as nothing known, a chromosome moved to make the pairs come out) is flagged "classifier_disagrees",
# however sure the assignment is of the whole cell. Chosen on the training frames and composites: the
# largest value whose marks are errors at least as often as the other marks are (BENCHMARKS.md, End to end,
# thirty-second update).
CLASSIFIER_DISAGREES_BELOW = 0.05
# Junk lengths: spread evenly in log length over ~30-fold (a speck to two chromosome 1s).
_JUNK_LOG_LENGTH_RANGE = math.log(30.0)


def junk_prior_from_scores(scores, intercept: float, slope: float) -> np.ndarray:
    """Per-object junk priors from detection scores: ``sigmoid(intercept + slope * logit(score))``.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Detection scores in (0, 1); NaN (no score) gets :data:`JUNK_PRIOR`.
    intercept, slope : float
        Logistic calibration of "matches no true chromosome" on the logit of
        the score, fitted on training frames (``karyopipe calibrate-junk``
        stores them in the segmentation weights).

    Returns
    -------
    junk_prior : ndarray, shape (n,), within :data:`JUNK_PRIOR_BOUNDS`
    """
    scores = np.asarray(scores, dtype=float).reshape(-1)
    s = np.clip(scores, 1e-6, 1 - 1e-6)
    prior = 1.0 / (1.0 + np.exp(-(intercept + slope * np.log(s / (1 - s)))))
    prior = np.clip(prior, *JUNK_PRIOR_BOUNDS)
    return np.where(np.isfinite(scores), prior, JUNK_PRIOR)


def geometry_measures(geometries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the assignment reads from :class:`karyopipe.geometry.ChromosomeGeometry` results.

    Returns
    -------
    lengths, centromere_index, polarity_confidence : ndarray, shape (n,)
        Length and centromere index are NaN for an object without an axis.
    """
    lengths = np.array([g.length_px if g.length_px > 0 else np.nan for g in geometries], float)
    ci = np.array([g.centromere_index if g.length_px > 0 else np.nan for g in geometries], float)
    pc = np.array([g.polarity_confidence for g in geometries], float)
    return lengths, ci, pc


@dataclass(frozen=True)
class Hypothesis:
    """One ploidy + sex-complement hypothesis: ``ploidy`` copies of each autosome, ``n_x`` X, ``n_y`` Y."""

    name: str
    ploidy: int
    n_x: int
    n_y: int
    prior: float


def _hypothesis(name: str, prior: float) -> Hypothesis:
    ploidy, sex = (3, name[3:]) if name.startswith("3n,") else (2, name)
    return Hypothesis(name, ploidy, sex.count("X"), sex.count("Y"), prior)


HYPOTHESES: tuple[Hypothesis, ...] = tuple(_hypothesis(n, p) for n, p in HYPOTHESIS_PRIORS.items())
_NORMAL = ("XX", "XY")


@dataclass
class Abnormality:
    """One numerical abnormality of a call.

    Attributes
    ----------
    description : str
        ISCN-style: ``"+21"``, ``"-22"``, ``"XXY"`` (sex complement), ``"3n"`` (triploidy).
    confidence : float
        Probability that the abnormality is real rather than the best normal
        alternative, from the cost difference of the two solutions.
    kind : str
        ``"gain"``, ``"loss"``, ``"sex"`` or ``"ploidy"``.
    number : int or None
        Class number of a gain or loss.
    """

    description: str
    confidence: float
    kind: str = "gain"
    number: int | None = None


@dataclass
class KaryotypeCall:
    """The karyotype of one cell.

    Attributes
    ----------
    labels : ndarray, shape (n,), int
        Class number 1..24 per object, 0 = unassigned.
    confidence : ndarray, shape (n,), float
        Probability that the object's label is right given the whole cell.
    flags : list of list of str
        Per object: ``"uncertain"``, ``"unassigned"``, ``"extra_copy"``,
        ``"reassigned"`` (label differs from the classifier's top class),
        ``"classifier_disagrees"`` (the classifier gave the label less than
        :data:`CLASSIFIER_DISAGREES_BELOW`),
        ``"length_outlier"``, ``"no_length"`` (NaN or non-positive length given),
        ``"polarity_uncertain"``, ``"paired_by_banding"`` (moved by homolog pairing,
        see ``pair_log_odds``).
    karyotype : str
        ISCN numerical karyotype (``"47,XX,+21"``); ``""`` when not callable.
    abnormalities : list of Abnormality
    possible : list of Abnormality
        Gains not called but not ruled out: an object left unassigned (as
        junk) that would be a third copy of its class (kind ``"possible_gain"``)
        or an extra sex chromosome (kind ``"possible_sex"``, description the
        complement, ``"XXY"``) with probability >= :data:`POSSIBLE_GAIN_P`. Not in
        the karyotype string; the statement asks for a check.
    sex : str
        Sex-chromosome complement found (``"XY"``, ``"X"``, ``"XXY"``...).
    sex_confidence : float
        Probability that ``sex`` is the cell's complement rather than any other
        of the same ploidy, from the cost differences of their best
        assignments. Below ``uncertain_below`` the statement names the runner-up.
    statement : str
        Plain-language summary, including why no call was made.
    pairs : dict of int to list of int
        Class number -> object indices, homologs longest first.
    counts : dict of int to int
        Objects per class number.
    ploidy : int
    hypothesis : str
        Winning hypothesis name (``"XY"``, ``"3n,XXY"``...).
    hypothesis_costs : dict of str to float
        Total cost (nats) of each hypothesis relative to the best.
    scale : float
        Pixels per unit of relative length (percent of the haploid autosomal set).
    callable : bool
        False when there were too few or too many objects to call.
    """

    labels: np.ndarray
    confidence: np.ndarray
    flags: list[list[str]]
    karyotype: str
    abnormalities: list[Abnormality]
    sex: str
    statement: str
    pairs: dict[int, list[int]]
    counts: dict[int, int] = field(default_factory=dict)
    ploidy: int = 2
    hypothesis: str = ""
    hypothesis_costs: dict[str, float] = field(default_factory=dict)
    scale: float = float("nan")
    callable: bool = True
    possible: list[Abnormality] = field(default_factory=list)
    sex_confidence: float = float("nan")

    @property
    def classes(self) -> np.ndarray:
        """Alias of :attr:`labels`."""
        return self.labels

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists)."""
        out = asdict(self)
        out["labels"] = [int(v) for v in self.labels]
        out["confidence"] = [round(float(v), 4) for v in self.confidence]
        out["label_names"] = [class_name(int(v)) if v else "?" for v in self.labels]
        out["pairs"] = {class_name(k): v for k, v in self.pairs.items()}
        out["counts"] = {class_name(k): v for k, v in self.counts.items()}
        return out


@dataclass
class _Slots:
    cls: np.ndarray        # (m,) class number, 0 for unassigned
    kind: np.ndarray       # (m,) 0 normal, 1 gain, 2 unassigned
    bias: np.ndarray       # (m,) cost added to the object cost when filled
    constant: float        # cost of the slots if all left empty, plus the hypothesis prior


def _per_class(prior, name: str) -> dict[int, float]:
    """Cost (-log prior) per class number, from one prior or a dict of them."""
    if isinstance(prior, dict):
        prior = {int(k): float(v) for k, v in prior.items()}
    else:
        prior = {k: float(prior) for k in range(1, NUM_CLASSES + 1)}
    bad = {k: v for k, v in prior.items() if not 0 < v < 1}
    if bad:
        raise ValueError(f"{name} must be probabilities in (0, 1), got {bad}")
    return {k: -math.log(v) for k, v in prior.items()}


def _build_slots(hyp: Hypothesis, n: int, gain_cost: dict, loss_cost: dict, unassigned_cost: float,
                 max_extra: int) -> _Slots:
    cls, kind, bias = [], [], []
    constant = -math.log(hyp.prior)
    for k in range(1, NUM_CLASSES + 1):
        normal = hyp.ploidy if k in AUTOSOMES else (hyp.n_x if k == X else hyp.n_y)
        extra = max_extra if k in AUTOSOMES else 0
        # Sex-chromosome counts are set by the complement; an empty X or Y slot
        # costs as much as the rarest complement change, so it is fitted, not left empty.
        loss = loss_cost.get(k, max(loss_cost.values()))
        constant += normal * loss
        # Filling a normal slot earns back the loss penalty its emptiness would cost.
        cls += [k] * (normal + extra)
        kind += [0] * normal + [1] * extra
        bias += [-loss] * normal + [gain_cost.get(k, 0.0)] * extra
    cls += [0] * n
    kind += [2] * n
    bias += [unassigned_cost] * n
    return _Slots(np.array(cls), np.array(kind), np.array(bias, float), constant)


def _solve(obj_cost: np.ndarray, slots: _Slots) -> tuple[float, np.ndarray]:
    """Best assignment; returns (total cost, slot index per object)."""
    cost = _cost_matrix(obj_cost, slots)
    rows, cols = linear_sum_assignment(cost)
    slot_of = np.empty(len(obj_cost), int)
    slot_of[rows] = cols
    return float(cost[rows, cols].sum() + slots.constant), slot_of


def _robust_penalty(r: np.ndarray, sigma, sigma_out: float, outlier_rate: float) -> np.ndarray:
    """``-log`` of a Gaussian + broad-Gaussian mixture density of the residual ``r``, zero at ``r = 0``.

    Measured residuals have heavy tails (a bent chromosome measured short, a
    centromere found on the wrong side), so one bad measurement costs a
    bounded few nats instead of overruling the classifier.
    """
    inlier = (1 - outlier_rate) / sigma * np.exp(-0.5 * (r / sigma) ** 2)
    outlier = outlier_rate / sigma_out * np.exp(-0.5 * (r / sigma_out) ** 2)
    return np.log((1 - outlier_rate) / sigma + outlier_rate / sigma_out) - np.log(inlier + outlier + 1e-300)


def _costs(log_probs, lengths, centromere_index, scale, *, temperature, y_weight, length_sigma, ci_sigma,
           length_weight, ci_weight, outlier_rate=0.1) -> np.ndarray:
    """Per-object per-class cost (n, 24): classifier NLL plus morphology penalties."""
    cost = -log_probs / temperature
    cost[:, Y - 1] *= y_weight
    rel = np.array([CHROMOSOMES[k].relative_length for k in range(1, NUM_CLASSES + 1)])
    # Y carries a large heterochromatic block of variable size: let its length vary more.
    sigma = np.full(NUM_CLASSES, length_sigma)
    sigma[Y - 1] *= 2.0
    if length_weight and np.isfinite(scale) and scale > 0:
        r = np.log(np.maximum(lengths, 1e-6) / scale)[:, None] - np.log(rel)[None, :]
        penalty = _robust_penalty(np.nan_to_num(r), sigma[None, :], 3.5 * length_sigma, outlier_rate)
        cost = cost + length_weight * np.where(np.isfinite(r), penalty, 0.0)
    if centromere_index is not None and ci_weight:
        ci_ref = np.array([CHROMOSOMES[k].centromere_index for k in range(1, NUM_CLASSES + 1)])
        r = centromere_index[:, None] - ci_ref[None, :]
        cost = cost + ci_weight * np.where(np.isfinite(r), _robust_penalty(np.nan_to_num(r), ci_sigma,
                                                                            3.5 * ci_sigma, outlier_rate), 0.0)
    return cost


def _estimate_scale(lengths: np.ndarray, labels: np.ndarray) -> float:
    """Pixels per relative-length unit: median over labelled objects, so a few wrong labels do not move it."""
    ok = (labels > 0) & np.isfinite(lengths)
    if not ok.any():
        return float("nan")
    rel = np.array([CHROMOSOMES[int(k)].relative_length for k in labels[ok]])
    return float(np.median(lengths[ok] / rel))


def _check(name, arr, n):
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")


def assign_karyotype(
    log_probs,
    lengths=None,
    centromere_index=None,
    *,
    polarity_confidence=None,
    hypotheses: tuple[Hypothesis, ...] = HYPOTHESES,
    gain_prior: float | dict[int, float] = GAIN_PRIOR,
    loss_prior: float | dict[int, float] = LOSS_PRIOR,
    junk_prior=JUNK_PRIOR,
    unassigned_cost: float | None = None,
    max_extra: int = 1,
    temperature: float = 1.0,
    y_weight: float = Y_EVIDENCE_WEIGHT,
    length_sigma: float = 0.10,
    ci_sigma: float = 0.06,
    length_weight: float = 1.0,
    ci_weight: float = 1.0,
    uncertain_below: float = UNCERTAIN_BELOW,
    min_objects: int = MIN_OBJECTS,
    max_objects: int = MAX_OBJECTS,
    pair_log_odds=None,
    pairing_weight: float = 1.0,
) -> KaryotypeCall:
    """Assign every chromosome of a cell to a class, jointly, and call the karyotype.

    Parameters
    ----------
    log_probs : array_like, shape (n, 24)
        Classifier log-probabilities per object; column ``k - 1`` is class ``k``.
        Rows are renormalised (log-softmax), so logits are accepted too.
    lengths : array_like, shape (n,), optional
        Axis length of each object in pixels (one scale within the cell).
        NaN or <= 0 for an object without a usable axis: it is scored
        without a length term and flagged ``"no_length"``.
        Omitted: no length term, and homologs keep their input order.
    centromere_index : array_like, shape (n,), optional
        p / (p + q) per object; NaN where unknown. Omitted: not used.
    polarity_confidence : array_like, shape (n,), optional
        Geometry's confidence that the p-arm is up; below 0.5 flags the object.
    hypotheses : tuple of Hypothesis
        Ploidy / sex complements considered, with their priors.
    gain_prior, loss_prior : float or dict of int to float
        Prior probability of one extra / one missing copy of an autosome, one
        value or one per class number (defaults :data:`GAIN_PRIOR`, :data:`LOSS_PRIOR`).
    junk_prior : float or array_like, shape (n,)
        Prior that an object is not a chromosome (debris, a clump of two, a
        fragment). Only an object that fits no free class slot, typically by
        its length, is left out of the karyotype. One value per object when
        the segmenter says more about each (its detection score, see
        :func:`karyopipe.karyogram.junk_prior_from_scores`).
    unassigned_cost : float, optional
        Override the cost (nats) of leaving an object out, which is otherwise
        derived from ``junk_prior``: ``-log junk_prior + log 24`` (a junk
        object's scores favour no class) plus the log ratios of the peak
        length and centromere densities to flat junk densities.
    max_extra : int
        Extra-copy slots per autosome.
    temperature : float
        Divides the classifier log-probabilities (>1 for an overconfident model).
    y_weight : float
        Multiplies the classifier cost of class Y (:data:`Y_EVIDENCE_WEIGHT`):
        weak Y evidence does not make a cell male. 1 treats Y like any class.
    length_sigma, ci_sigma : float
        Spread of log relative length and of centromere index around the
        reference values in :data:`karyopipe.classes.CHROMOSOMES`. Defaults
        are the robust spreads measured by geometry on real training cells
        (``docs/scripts/calibrate_karyogram.py``: 0.065-0.10 and 0.06); a
        10 % outlier component 3.5 times as wide keeps the tails cheap.
    length_weight, ci_weight : float
        Weights of the morphology terms (0 turns one off).
    uncertain_below : float
        Objects whose confidence is lower are flagged ``"uncertain"``. The
        confidences are calibrated on synthetic calibrated scores (see
        BENCHMARKS.md), so 0.9 flags objects with a >= 10 % chance of being wrong.
    min_objects, max_objects : int
        Outside this range no karyotype is called (the labels are still given).
    pair_log_odds : array_like, shape (n, n), optional
        Log-likelihood ratio that two objects are homologs, from how alike
        their bands are (:func:`karyopipe.karyogram.pairing.homolog_log_odds`).
        Given, the assignment is refined by swapping objects between classes
        (:func:`karyopipe.karyogram.pairing.refine_homologs`); counts, and so
        the karyotype string, do not change. Moved objects are flagged
        ``"paired_by_banding"`` and their confidence is that of the swap.
    pairing_weight : float
        Weight of ``pair_log_odds`` against the per-object costs.

    Returns
    -------
    KaryotypeCall
    """
    log_probs = np.asarray(log_probs, dtype=float)
    if log_probs.ndim != 2 or log_probs.shape[1] != NUM_CLASSES:
        raise ValueError(f"log_probs must have shape (n, {NUM_CLASSES}), got {log_probs.shape}")
    n = len(log_probs)
    if lengths is None:
        lengths, length_weight = np.ones(n), 0.0
    lengths = np.asarray(lengths, dtype=float).reshape(-1)
    _check("lengths", lengths, n)
    if not np.all(np.isfinite(log_probs) | (log_probs == -np.inf)):
        raise ValueError("log_probs contains NaN or +inf")
    if n and np.all(log_probs >= 0) and np.allclose(log_probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("log_probs look like probabilities (rows >= 0 summing to 1): pass their log")
    # A degenerate object (no axis) has no usable length: it is scored without one, and flagged.
    no_length = ~np.isfinite(lengths) | (lengths <= 0)
    lengths = np.where(no_length, np.nan, lengths)
    if centromere_index is not None:
        centromere_index = np.asarray(centromere_index, dtype=float).reshape(-1)
        _check("centromere_index", centromere_index, n)
    if polarity_confidence is not None:
        polarity_confidence = np.asarray(polarity_confidence, dtype=float).reshape(-1)
        _check("polarity_confidence", polarity_confidence, n)
    if n == 0:
        return KaryotypeCall(np.zeros(0, int), np.zeros(0), [], "", [], "", _statement_few(0, min_objects), {},
                             callable=False)
    log_probs = log_softmax(np.maximum(log_probs, -1e4), axis=1)
    gain_cost, loss_cost = _per_class(gain_prior, "gain_prior"), _per_class(loss_prior, "loss_prior")
    junk_prior = np.asarray(junk_prior, dtype=float)
    if junk_prior.ndim:
        _check("junk_prior", junk_prior.reshape(-1), n)
    if not np.all((junk_prior > 0) & (junk_prior < 1)):
        raise ValueError("junk_prior must be probabilities in (0, 1)")
    # Per-object priors: the slots share one unassigned cost (that of the geometric mean
    # prior), and each object's class costs shift by its log prior ratio, which
    # is the same as giving each object its own unassigned cost.
    reference = float(np.exp(np.mean(np.log(junk_prior))))
    junk_shift = np.log(junk_prior.reshape(-1) / reference) if junk_prior.ndim else np.zeros(1)
    if unassigned_cost is None:
        unassigned_cost = -math.log(reference) + math.log(NUM_CLASSES)
        # Peak of the chromosome density over the junk density: the morphology
        # terms are zero at their peak, so junk pays this to stand on the same scale.
        if length_weight:
            peak = (0.9 / length_sigma + 0.1 / (3.5 * length_sigma)) / math.sqrt(2 * math.pi)
            unassigned_cost += length_weight * math.log(peak * _JUNK_LOG_LENGTH_RANGE)
        if centromere_index is not None and ci_weight:
            peak = (0.9 / ci_sigma + 0.1 / (3.5 * ci_sigma)) / math.sqrt(2 * math.pi)
            unassigned_cost += ci_weight * math.log(peak * 0.5)  # junk: any index in [0, 0.5]
    if not y_weight > 0:
        raise ValueError(f"y_weight must be positive, got {y_weight}")
    kw = dict(temperature=temperature, y_weight=y_weight, length_sigma=length_sigma, ci_sigma=ci_sigma,
              length_weight=length_weight, ci_weight=ci_weight)

    # Scale and assignment depend on each other: start from the classifier's top
    # labels, then re-estimate the scale from the assignment and solve again.
    scale = _estimate_scale(lengths, np.argmax(log_probs, axis=1) + 1)
    slots = {h.name: _build_slots(h, n, gain_cost, loss_cost, unassigned_cost, max_extra) for h in hypotheses}
    for iteration in range(4):
        obj_cost = _costs(log_probs, lengths, centromere_index, scale, **kw) + junk_shift[:, None]
        results = {name: _solve(obj_cost, s) for name, s in slots.items()}
        best = min(results, key=lambda name: results[name][0])
        labels = slots[best].cls[results[best][1]]
        new_scale = _estimate_scale(lengths, labels)
        if iteration == 3 or not np.isfinite(new_scale) or abs(new_scale - scale) < 1e-3 * scale:
            break
        scale = new_scale
    hyp = next(h for h in hypotheses if h.name == best)
    best_cost, slot_of = results[best]
    s = slots[best]
    labels = s.cls[slot_of].astype(int)

    call_ok = min_objects <= n <= max_objects
    paired: dict[int, float] = {}
    if pair_log_odds is not None and call_ok:
        pair_log_odds = np.asarray(pair_log_odds, dtype=float)
        if pair_log_odds.shape != (n, n):
            raise ValueError(f"pair_log_odds must have shape ({n}, {n}), got {pair_log_odds.shape}")
        from karyopipe.karyogram.pairing import refine_homologs

        labels, paired = refine_homologs(obj_cost, labels, pair_log_odds, weight=pairing_weight)
        slot_of = _follow_swaps(slot_of, s.cls, labels)
    in_gain = s.kind[slot_of] == 1
    if call_ok:
        confidence = _label_confidence(obj_cost, s, slot_of, best_cost)
        for i, gain in paired.items():
            confidence[i] = _sigmoid(gain)
    else:
        # No call to protect: the per-object posterior is enough, and cheap for hundreds of objects.
        post = np.exp(log_softmax(-obj_cost, axis=1))
        confidence = np.where(labels > 0, post[np.arange(n), np.maximum(labels, 1) - 1], 0.0)
    counts = {k: int(np.sum(labels == k)) for k in range(1, NUM_CLASSES + 1)}
    flags: list[list[str]] = [[] for _ in range(n)]
    top = np.argmax(log_probs, axis=1) + 1
    rel = np.array([CHROMOSOMES[k].relative_length for k in range(1, NUM_CLASSES + 1)])
    for i in range(n):
        if labels[i] == 0:
            flags[i].append("unassigned")
            continue
        if confidence[i] < uncertain_below:
            flags[i].append("uncertain")
        if in_gain[i]:
            flags[i].append("extra_copy")
        if labels[i] != top[i]:
            flags[i].append("reassigned")
        if log_probs[i, labels[i] - 1] < math.log(CLASSIFIER_DISAGREES_BELOW):
            flags[i].append("classifier_disagrees")
        if i in paired:
            flags[i].append("paired_by_banding")
        if no_length[i]:
            flags[i].append("no_length")
        elif length_weight and np.isfinite(scale) and \
                abs(math.log(lengths[i] / (scale * rel[labels[i] - 1]))) > 3 * length_sigma:
            flags[i].append("length_outlier")
        if polarity_confidence is not None and polarity_confidence[i] < 0.5:
            flags[i].append("polarity_uncertain")

    pairs = homolog_pairs(labels, lengths)
    n_assigned = int(np.sum(labels > 0))
    costs = {name: r[0] - best_cost for name, r in results.items()}
    sex = "X" * counts[X] + "Y" * counts[Y]
    sex_confidence, sex_runner_up = _sex_odds(costs, hyp, hypotheses)
    call = KaryotypeCall(labels, confidence, flags, "", [], sex, "", pairs, counts, hyp.ploidy, best,
                         costs, scale if length_weight else float("nan"), call_ok,
                         sex_confidence=sex_confidence)
    if not call_ok:
        call.statement = _statement_few(n, min_objects) if n < min_objects else (
            f"{n} objects: too many to call a karyotype (more than {max_objects}); the spread probably holds "
            "debris, nuclei, a second cell or a fragmented segmentation. Labels are a best effort only.")
        return call
    assigned_counts = {k: v for k, v in counts.items()}
    call.karyotype = karyotype_string(assigned_counts, ploidy=hyp.ploidy)
    call.abnormalities = _abnormalities(obj_cost, results, slots, hyp, hypotheses, counts, best_cost)
    call.possible = _possible_gains(obj_cost, s, labels, counts, hyp, best_cost) + \
        _possible_sex_gains(results, slots, hyp, hypotheses, labels, best_cost)
    call.statement = _statement(call, n, n_assigned, uncertain_below, sex_runner_up)
    return call


def _sex_odds(costs: dict[str, float], hyp: Hypothesis, hypotheses) -> tuple[float, str]:
    """Posterior of the called sex complement among the hypotheses of its ploidy (costs relative to
    the best), and the complement of the cheapest other one (``""`` when there is none)."""
    same = [h for h in hypotheses if h.ploidy == hyp.ploidy and h.name in costs]
    confidence = 1.0 / float(np.sum(np.exp(-np.maximum(np.array([costs[h.name] for h in same]) - costs[hyp.name], 0.0))))
    others = [h for h in same if h.name != hyp.name]
    if not others:
        return confidence, ""
    runner_up = min(others, key=lambda h: costs[h.name])
    return confidence, "X" * runner_up.n_x + "Y" * runner_up.n_y


def homolog_pairs(labels, lengths) -> dict[int, list[int]]:
    """Class number -> its object indices, longest first (ties by index); classes without objects left out.

    ``lengths`` NaN (no usable axis) sort as 0, after the measured ones.
    """
    labels = np.asarray(labels, int)
    lengths = np.nan_to_num(np.asarray(lengths, float))
    return {k: sorted(np.flatnonzero(labels == k).tolist(), key=lambda i: (-lengths[i], i))
            for k in range(1, NUM_CLASSES + 1) if np.any(labels == k)}


def _follow_swaps(slot_of: np.ndarray, slot_class: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Slots after objects swapped classes: each object takes a slot its new class held before."""
    slot_of = slot_of.copy()
    moved = np.flatnonzero(slot_class[slot_of] != labels)
    free = {int(k): [int(slot_of[i]) for i in moved if slot_class[slot_of[i]] == k] for k in set(labels[moved].tolist())}
    for i in moved:
        slot_of[i] = free[int(labels[i])].pop()
    return slot_of


def _cost_matrix(obj_cost: np.ndarray, s: _Slots) -> np.ndarray:
    cls = np.clip(s.cls - 1, 0, None)
    return np.where(s.cls[None, :] > 0, obj_cost[:, cls], 0.0) + s.bias[None, :]


def _label_confidence(obj_cost, s: _Slots, slot_of, best_cost, n_alternatives: int = 6) -> np.ndarray:
    """P(label right | cell) as a min-marginal: re-solve with object i forced into each rival class.

    Only the ``n_alternatives`` cheapest rival classes of each object (and
    "unassigned") are tried: the others lie many nats away and add nothing.
    """
    n = len(obj_cost)
    base = _cost_matrix(obj_cost, s)
    conf = np.ones(n)
    for i in range(n):
        own = s.cls[slot_of[i]]
        order = [k + 1 for k in np.argsort(obj_cost[i]) if k + 1 != own][:n_alternatives]
        rivals = order + ([0] if own != 0 else [])
        total = 0.0
        for k in rivals:
            cost = base.copy()
            cost[i, s.cls != k] = 1e9
            rows, cols = linear_sum_assignment(cost)
            delta = float(cost[rows, cols].sum() + s.constant) - best_cost
            total += math.exp(-min(max(delta, 0.0), 700.0))
        conf[i] = 1.0 / (1.0 + total)
    return conf


def _constrained_cost(obj_cost, s: _Slots, *, drop_gain: int | None = None, force_fill: int | None = None) -> float:
    """Best cost without the gain slot of one class, or with its normal slots all filled."""
    bias = s.bias.copy()
    if drop_gain is not None:
        bias[(s.cls == drop_gain) & (s.kind == 1)] = 1e6
    if force_fill is not None:
        bias[(s.cls == force_fill) & (s.kind == 0)] -= 1e6
    constrained = _Slots(s.cls, s.kind, bias, s.constant)
    cost, slot_of = _solve(obj_cost, constrained)
    if force_fill is not None:
        cost += 1e6 * int(np.sum((s.cls == force_fill) & (s.kind == 0)))
    return cost


def _possible_gains(obj_cost, s: _Slots, labels, counts, hyp, best_cost) -> list[Abnormality]:
    """Unassigned objects that could be an extra copy of their likeliest autosome (see ``KaryotypeCall.possible``)."""
    out = []
    base = _cost_matrix(obj_cost, s)
    for i in np.flatnonzero(labels == 0):
        k = min(AUTOSOMES, key=lambda c: obj_cost[i, c - 1])
        gain_slots = (s.cls == k) & (s.kind == 1)
        if counts[k] != hyp.ploidy or not gain_slots.any():
            continue
        # Object i forced into a gain slot of class k, everything else re-solved.
        cost = base.copy()
        cost[i, :] += 1e6
        cost[i, gain_slots] -= 1e6
        rows, cols = linear_sum_assignment(cost)
        delta = float(cost[rows, cols].sum() + s.constant) - best_cost
        p = _sigmoid(-delta)
        if p >= POSSIBLE_GAIN_P:
            out.append(Abnormality(f"+{k}", p, "possible_gain", k))
    return out


def _possible_sex_gains(results, slots, hyp, hypotheses, labels, best_cost) -> list[Abnormality]:
    """Complements with one more sex chromosome that would use an object the call left unassigned."""
    out = []
    for h in hypotheses:
        if h.ploidy != hyp.ploidy or h.n_x + h.n_y != hyp.n_x + hyp.n_y + 1 or h.n_x < hyp.n_x or h.n_y < hyp.n_y:
            continue
        cost, slot_of = results[h.name]
        uses_junk = np.any((labels == 0) & (slots[h.name].cls[slot_of] > 0))
        p = _sigmoid(best_cost - cost)
        if uses_junk and p >= POSSIBLE_GAIN_P:
            out.append(Abnormality("X" * h.n_x + "Y" * h.n_y, p, "possible_sex"))
    return out


def _sigmoid(delta: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(max(delta, -700.0), 700.0)))


def _abnormalities(obj_cost, results, slots, hyp, hypotheses, counts, best_cost) -> list[Abnormality]:
    out: list[Abnormality] = []
    if hyp.ploidy != 2:
        diploid = [r[0] for name, r in results.items() if next(h for h in hypotheses if h.name == name).ploidy == 2]
        delta = (min(diploid) - best_cost) if diploid else float("inf")
        out.append(Abnormality("3n", _sigmoid(delta), "ploidy"))
    sex = "X" * hyp.n_x + "Y" * hyp.n_y
    if sex not in _NORMAL:
        same_ploidy = [r[0] for name, r in results.items()
                       if (h := next(h for h in hypotheses if h.name == name)).ploidy == hyp.ploidy
                       and "X" * h.n_x + "Y" * h.n_y in _NORMAL]
        delta = (min(same_ploidy) - best_cost) if same_ploidy else float("inf")
        out.append(Abnormality(sex or "--", _sigmoid(delta), "sex"))
    s = slots[hyp.name]
    for k in AUTOSOMES:
        diff = counts[k] - hyp.ploidy
        if diff > 0:
            delta = _constrained_cost(obj_cost, s, drop_gain=k) - best_cost
            out += [Abnormality(f"+{k}", _sigmoid(delta), "gain", k)] * diff
        elif diff < 0:
            delta = _constrained_cost(obj_cost, s, force_fill=k) - best_cost
            out += [Abnormality(f"-{k}", _sigmoid(delta), "loss", k)] * -diff
    return out


_SEX_NAMES = {
    "XX": "female", "XY": "male", "X": "Turner syndrome (monosomy X)", "XXY": "Klinefelter syndrome",
    "XYY": "XYY syndrome", "XXX": "triple X",
}
_TRISOMY_NAMES = {21: "Down syndrome", 18: "Edwards syndrome", 13: "Patau syndrome"}


def _statement_few(n: int, min_objects: int) -> str:
    return (f"Only {n} objects: too few to call a karyotype (at least {min_objects} needed); the spread is "
            "probably broken, partly imaged or under-segmented. Labels are a best effort only.")


def _statement(call: KaryotypeCall, n: int, n_assigned: int, uncertain_below: float = UNCERTAIN_BELOW,
               sex_runner_up: str = "") -> str:
    ab = call.abnormalities
    n_uncertain = sum("uncertain" in f for f in call.flags)
    if not ab:
        head = f"{call.karyotype}: normal {_SEX_NAMES.get(call.sex, '')} karyotype."
    else:
        words = []
        for a in ab:
            if a.kind == "ploidy":
                words.append(f"triploidy (p={a.confidence:.2f})")
            elif a.kind == "sex":
                words.append(f"sex complement {a.description}, {_SEX_NAMES.get(a.description, 'abnormal')} "
                             f"(p={a.confidence:.2f})")
            elif a.kind == "gain":
                name = _TRISOMY_NAMES.get(a.number, "")
                words.append(f"gain of chromosome {a.number}" + (f", {name}" if name and call.ploidy == 2 else "")
                             + f" (p={a.confidence:.2f})")
            else:
                words.append(f"loss of chromosome {a.number} (p={a.confidence:.2f}); a single missing "
                             "chromosome is often lost in spreading: confirm on other cells")
        head = f"{call.karyotype}: " + "; ".join(dict.fromkeys(words)) + "."
    tail = f" {n} objects, {n_assigned} assigned"
    if n - n_assigned:
        tail += f", {n - n_assigned} left unassigned"
    if n_uncertain:
        tail += f", {n_uncertain} uncertain"
    tail += "."
    for a in call.possible:
        if a.kind == "possible_sex":
            tail += (f" Possible sex complement {a.description} ({_SEX_NAMES.get(a.description, 'abnormal')}), "
                     f"p={a.confidence:.2f}: an object left unassigned as debris may be an extra sex chromosome;"
                     " check it.")
            continue
        name = _TRISOMY_NAMES.get(a.number, "")
        tail += (f" Possible gain of chromosome {a.number}" + (f" ({name})" if name and call.ploidy == 2 else "")
                 + f", p={a.confidence:.2f}: an object left unassigned as debris may be a third {a.number};"
                 " check it.")
    if sex_runner_up and call.sex and call.sex_confidence < uncertain_below:
        tail += (f" Sex call uncertain: {call.sex} has p={call.sex_confidence:.2f}, the likeliest alternative is "
                 f"{sex_runner_up} ({_SEX_NAMES.get(sex_runner_up, 'abnormal')}); check the X and Y chromosomes.")
    if n_uncertain > 0.25 * max(n_assigned, 1):
        tail += " Low confidence: review the karyogram before reporting."
        if call.ploidy > 2:
            # Its p compares the best polyploid and diploid fits only: neither explains a field of fragments.
            tail += (" With this many uncertain chromosomes a polyploid call is more often chromosomes segmented in "
                     "pieces, or a second cell in the field, than polyploidy: count the chromosomes by eye.")
    elif any(a.confidence < 0.9 for a in ab):
        tail += " An abnormality is below 0.9 confidence: confirm on more cells."
    return head + tail
