"""Saving and loading shipped weights: fp16 on disk, fp32 in memory, with a model card.

A weights file is a plain dict ``{"state_dict", "config", "meta"}`` that
``torch.load(..., weights_only=True)`` accepts: tensors, str, numbers, lists
and dicts only. Its model card is the Markdown file beside it (same stem,
``.md``): data, split, config, metrics, date.

Examples
--------
>>> import torch, tempfile, pathlib
>>> from karyopipe.weights import save_weights, load_weights
>>> net = torch.nn.Linear(3, 2)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.pth"
>>> _ = save_weights(path, net.state_dict(), config={"in": 3}, card={"data": "none"})
>>> state, config, meta = load_weights(path)
>>> state["weight"].dtype, config["in"]
(torch.float32, 3)
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

MAX_FILE_BYTES = 95_000_000

SEGMENTATION_WEIGHTS = "mask_rcnn_karyotype_best.pth"
CLASSIFICATION_WEIGHTS = "karyotype_classifier_best.pth"
# The earlier, CPU-trained ResNet18 segmenter: faster, and the pipeline's opt-in second segmenter.
SEGMENTATION_R18_WEIGHTS = "mask_rcnn_karyotype_r18.pth"


def weights_dir() -> Path:
    """Folder of the shipped weights: ``$KARYOPIPE_WEIGHTS`` or the repository's ``weights/``."""
    env = os.environ.get("KARYOPIPE_WEIGHTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "weights"


def default_weights(name: str) -> Path:
    """Path of a shipped weights file by file name (it may not exist)."""
    return weights_dir() / name


def weights_path(given, name: str) -> Path:
    """``given`` as a Path, or the shipped default ``name`` when ``given`` is None or empty.

    A bare file name that is not a file here but is one of the shipped weights names that file, so
    ``mask_rcnn_karyotype_r18.pth`` works from any directory.
    """
    if not given:
        return default_weights(name)
    path = Path(given)
    if not path.is_file() and path.name == str(given) and default_weights(path.name).is_file():
        return default_weights(path.name)
    return path


def atomic_save(obj, path) -> Path:
    """``torch.save`` into a temporary file beside ``path``, then rename it over ``path``.

    A run stopped while saving (a time limit, Ctrl-C, a lost machine) leaves
    the previous checkpoint whole instead of a truncated file that cannot be
    resumed from.
    """
    import os

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        torch.save(obj, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def save_weights(path, state_dict: dict, config: dict, card: dict | None = None) -> Path:
    """Store a state dict as fp16 with its config, and write the model card beside it.

    Parameters
    ----------
    path : str or Path
        Destination ``.pth`` file.
    state_dict : dict of str to Tensor
        Floating tensors are stored as fp16; integer buffers keep their dtype.
    config : dict
        JSON-serialisable builder arguments, enough to rebuild the model.
    card : dict, optional
        Model-card fields (``data``, ``split``, ``metrics``, ...). ``date`` is added.

    Returns
    -------
    Path
        The written weights file.
    """
    import torch

    path = Path(path)
    half = {
        key: (value.detach().to("cpu", torch.float16) if value.is_floating_point() else value.detach().cpu())
        for key, value in state_dict.items()
    }
    card = dict(card or {})
    card.setdefault("date", _dt.date.today().isoformat())
    meta = json.loads(json.dumps(card, default=str))
    atomic_save({"state_dict": half, "config": json.loads(json.dumps(config)), "meta": meta}, path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size / 1e6:.1f} MB exceeds the {MAX_FILE_BYTES / 1e6:.0f} MB limit")
    write_model_card(path.with_suffix(".md"), path.name, config, card)
    return path


def load_weights(path) -> tuple[dict, dict, dict]:
    """Load a weights file saved by :func:`save_weights`.

    Returns
    -------
    state_dict : dict
        Floating tensors converted to fp32.
    config : dict
    meta : dict
        The model-card fields stored in the file.

    Raises
    ------
    FileNotFoundError
        With a message that says which weights are missing and how to make them.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: weights not found (train them with run_training.sh or pass --weights)"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a karyopipe weights file ({exc})") from None
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise ValueError(f"{path}: not a karyopipe weights file (no state_dict)")
    state = {
        key: (value.float() if value.is_floating_point() else value)
        for key, value in blob["state_dict"].items()
    }
    return state, dict(blob.get("config", {})), dict(blob.get("meta", {}))


def update_weights(path, config: dict | None = None, card: dict | None = None) -> Path:
    """Add or replace entries of a weights file's config and model card; the tensors stay as they are.

    For what is fitted after training and belongs with the model (a junk
    calibration, an outline model, inference settings).
    """
    state, old_config, meta = load_weights(path)
    return save_weights(path, state, {**old_config, **(config or {})}, {**meta, **(card or {})})


def write_model_card(path, weights_name: str, config: dict, card: dict) -> None:
    """Write a short Markdown model card: data, split, config, metrics, date."""
    lines = [f"# Model card: `{weights_name}`", ""]
    order = ["model", "data", "split", "training", "metrics", "limitations", "date"]
    for key in order + sorted(k for k in card if k not in order):
        if key not in card:
            continue
        value = card[key]
        if isinstance(value, dict):
            lines.append(f"- **{key}**:")
            lines += [f"  - {k}: {v}" for k, v in value.items()]
        else:
            lines.append(f"- **{key}**: {value}")
    lines += ["", "## Config", "", "```json", compact_json(card_config(config)), "```", ""]
    Path(path).write_text("\n".join(lines))


def card_config(config: dict) -> dict:
    """``config`` with each ensemble member's long lists that repeat the file's own (the held-out cells,
    hundreds of ids) named instead of written out again: the card is read, the file keeps them all."""
    members = config.get("members")
    if not isinstance(members, list):
        return config
    shortened = []
    for member in members:
        if isinstance(member, dict):
            member = {k: (f"as {k} above ({len(v)} entries)" if isinstance(v, list) and len(v) > 10 and v == config.get(k)
                          else v) for k, v in member.items()}
        shortened.append(member)
    return {**config, "members": shortened}


def compact_json(value, indent: int = 2, _level: int = 0) -> str:
    """JSON with each list of plain values on one line, so cell lists do not run to pages.

    >>> print(compact_json({"cells": ["1", "2"], "model": {"width": 32}}))
    {
      "cells": ["1", "2"],
      "model": {
        "width": 32
      }
    }
    """
    inner, outer = " " * indent * (_level + 1), " " * indent * _level
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k))}: {compact_json(v, indent, _level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + outer + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [inner + compact_json(v, indent, _level + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + outer + "]"
    return json.dumps(value)


def refresh_model_card(path, corrections: dict | None = None) -> Path:
    """Write a weights file's model card again from what the file holds; the file is not touched.

    For a card whose layout changed, or whose prose needs ``corrections``
    (card fields that replace the stored ones in the Markdown only): shipped
    weights files are large, and rewriting one to mend a sentence would add
    a copy of it to every clone.
    """
    path = Path(path)
    _, config, meta = load_weights(path)
    card = path.with_suffix(".md")
    write_model_card(card, path.name, config, {**meta, **(corrections or {})})
    return card
