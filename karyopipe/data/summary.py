"""``karyopipe data-summary``: what a dataset holds, and what in it cannot be read.

Every image is decoded (not just listed), so truncated and corrupt files show
up with their reason.

Examples
--------
::

    karyopipe data-summary data/gband612
    karyopipe data-summary data/bioimlab/metaphases --json summary.json

>>> from karyopipe.data import read_dataset
>>> from karyopipe.data.summary import summarize, format_summary
>>> info = summarize(read_dataset("data/giemsa_boxes"))   # doctest: +SKIP
>>> info["images"], info["instances"]                      # doctest: +SKIP
(8, 465)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from karyopipe.classes import CLASS_NAMES
from karyopipe.data.model import CROPS, Dataset
from karyopipe.io import ImageReadError, detect_polarity, to_gray

POLARITY_SAMPLES = 200


def _class_key(name: str):
    return CLASS_NAMES.index(name) if name in CLASS_NAMES else len(CLASS_NAMES)


def summarize(dataset: Dataset, *, read_images: bool = True, progress: bool | None = None) -> dict:
    """Counts, classes, image properties and problems of a dataset, as a JSON-ready dict.

    Parameters
    ----------
    dataset : Dataset
    read_images : bool
        Decode every image to find unreadable ones and collect sizes and dtypes.
    progress : bool, optional
        Show a tqdm bar; default: when stderr is a terminal.

    Returns
    -------
    dict
        Keys ``root, format, kind, images, instances, instances_per_image,
        cells, classes, unlabelled, categories, pseudo_masks, image_types,
        polarity, height_range, width_range, problems, read_seconds``.
        ``polarity`` counts detected polarities on up to 200 evenly spaced images.
    """
    from tqdm import tqdm

    problems = [{"path": p.path, "reason": p.reason} for p in dataset.problems]
    classes: Counter = Counter()
    categories: Counter = Counter()
    unlabelled = pseudo = n_instances = 0
    for sample in dataset.samples:
        if dataset.kind == CROPS or sample.kind == CROPS:
            if sample.label is None:
                unlabelled += 1
            else:
                classes[CLASS_NAMES[sample.label - 1]] += 1
            continue
        for inst in sample.instances:
            n_instances += 1
            categories[inst.category] += 1
            pseudo += bool(inst.pseudo_mask)
            if inst.category != "chromosome":
                continue
            if inst.label is None:
                unlabelled += 1
            else:
                classes[CLASS_NAMES[inst.label - 1]] += 1

    image_types: Counter = Counter()
    polarity: Counter = Counter()
    # Polarity costs ~3 ms an image; a spread of up to POLARITY_SAMPLES says enough.
    polarity_every = max(1, -(-len(dataset.samples) // POLARITY_SAMPLES))
    heights, widths = [], []
    unreadable = 0
    start = time.perf_counter()
    if read_images:
        show = sys.stderr.isatty() if progress is None else progress
        for index, sample in enumerate(
            tqdm(dataset.samples, desc="reading images", unit="img", disable=not show, leave=False)
        ):
            try:
                image = sample.load_image()
            except ImageReadError as exc:
                unreadable += 1
                problems.append({"path": exc.path, "reason": exc.reason})
                continue
            except Exception as exc:  # a loader's own failure is still this file's problem
                unreadable += 1
                problems.append({"path": str(sample.path), "reason": f"{type(exc).__name__}: {exc}"})
                continue
            if image.ndim == 2:
                channels = "grey"
            else:
                channels = {3: "RGB", 4: "RGBA"}.get(image.shape[2], f"{image.shape[2]}-channel")
            image_types[f"{image.dtype} {channels}"] += 1
            if index % polarity_every == 0:
                step = max(1, max(image.shape[:2]) // 256)  # polarity is global; a thumbnail will do
                polarity[detect_polarity(to_gray(image[::step, ::step]))[0]] += 1
            heights.append(image.shape[0])
            widths.append(image.shape[1])
            want = (sample.meta.get("height"), sample.meta.get("width"))
            if all(want) and tuple(image.shape[:2]) != tuple(int(v) for v in want):
                problems.append({
                    "path": str(sample.path),
                    "reason": f"image is {image.shape[1]}x{image.shape[0]} but the annotation says {want[1]}x{want[0]}",
                })
    n_images = len(dataset.samples)
    return {
        "root": str(dataset.root),
        "format": dataset.format,
        "kind": dataset.kind,
        "images": n_images,
        "readable_images": n_images - unreadable if read_images else None,
        "instances": n_instances,
        "instances_per_image": round(n_instances / n_images, 2) if n_images else 0.0,
        "cells": len(dataset.cells),
        "classes": dict(sorted(classes.items(), key=lambda kv: _class_key(kv[0]))),
        "unlabelled": unlabelled,
        "categories": dict(categories),
        "pseudo_masks": pseudo,
        "image_types": dict(image_types.most_common()),
        "polarity": dict(polarity.most_common()),
        "height_range": [min(heights), max(heights)] if heights else None,
        "width_range": [min(widths), max(widths)] if widths else None,
        "problems": problems,
        "read_seconds": round(time.perf_counter() - start, 2) if read_images else None,
    }


def format_summary(info: dict, max_problems: int | None = None) -> str:
    """Human-readable text of a :func:`summarize` dict."""
    crops = info["kind"] == CROPS
    lines = [
        f"dataset     {info['root']}",
        f"format      {info['format']} ({info['kind']})",
        f"images      {info['images']}" + (
            f" ({info['readable_images']} readable)" if info.get("readable_images") is not None else ""
        ),
    ]
    if info["format"] == "images":
        lines.append("instances   none (unannotated images)")
    elif not crops:
        lines.append(f"instances   {info['instances']} ({info['instances_per_image']} per image)")
        other = {k: v for k, v in info["categories"].items() if k != "chromosome"}
        if other:
            lines.append("categories  " + ", ".join(f"{k} {v}" for k, v in info["categories"].items()))
        if info["pseudo_masks"]:
            lines.append(f"pseudo      {info['pseudo_masks']} thresholded masks (not ground truth)")
    lines.append(f"cells       {info['cells']}")
    what = "crops" if crops else "chromosomes"
    if info["classes"]:
        lines.append(f"classes     {len(info['classes'])} ({what} per class below)")
        lines.append("            " + "  ".join(f"{k}:{v}" for k, v in info["classes"].items()))
    if info["unlabelled"]:
        lines.append(f"unlabelled  {info['unlabelled']} {what}")
    if info["image_types"]:
        lines.append("pixels      " + ", ".join(f"{k} {v}" for k, v in info["image_types"].items()))
        (h0, h1), (w0, w1) = info["height_range"], info["width_range"]
        lines.append(f"size        height {h0}..{h1}, width {w0}..{w1}")
    if info.get("polarity"):
        sampled = sum(info["polarity"].values())
        lines.append(
            "polarity    " + ", ".join(f"{k} {v}" for k, v in info["polarity"].items())
            + (f" (of {sampled} sampled images)" if sampled < info["images"] else "")
        )
    problems = info["problems"]
    lines.append(f"problems    {len(problems)}" + (" (skipped or unreadable, with reasons)" if problems else ""))
    shown = problems if max_problems is None else problems[:max_problems]
    lines += [f"  {p['path']}: {p['reason']}" for p in shown]
    if len(shown) < len(problems):
        lines.append(f"  ... and {len(problems) - len(shown)} more (see --json)")
    if info.get("read_seconds") is not None:
        lines.append(f"read time   {info['read_seconds']} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from karyopipe.data.readers import FORMATS

    parser = argparse.ArgumentParser(
        prog="karyopipe data-summary",
        description="Summarise a chromosome dataset: format, images, instances, cells, "
        "classes, and every file that cannot be read, with the reason.",
    )
    parser.add_argument("path", help="dataset file or folder")
    parser.add_argument("--format", choices=FORMATS + ("crops",), help="skip format detection")
    parser.add_argument("--json", metavar="OUT", help="also write the summary as JSON to OUT")
    parser.add_argument("--no-read", action="store_true", help="only parse annotations, do not decode images")
    parser.add_argument("--pseudo-masks", action="store_true", help="derive box pseudo masks (VOC/YOLO)")
    parser.add_argument("--max-problems", type=int, default=50, help="problems listed on screen (default 50; all go to --json)")
    return parser


def main(argv: list[str]) -> int:
    """``karyopipe data-summary PATH [--format F] [--json OUT]``; exit code 0, or 1 if nothing was readable."""
    import logging

    from karyopipe.data.readers import read_dataset

    args = build_parser().parse_args(argv)
    # Skipped items are listed in the summary itself; one log line each would say it twice.
    logging.getLogger("karyopipe.data").setLevel(logging.ERROR)
    dataset = read_dataset(args.path, args.format, with_pseudo_masks=args.pseudo_masks)
    info = summarize(dataset, read_images=not args.no_read)
    print(format_summary(info, max_problems=args.max_problems))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return 0 if len(dataset.samples) else 1
