"""The ``karyopipe`` command: one subcommand per stage, mirroring the Python API.

Each subcommand lives in its stage module as ``main(argv) -> int`` with its own
argparse parser, imported only when called so ``karyopipe --help`` stays fast
and a missing optional stage cannot break the others.

Errors reach the user as one line naming the file and the problem; set
``KARYOPIPE_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import sys

# name -> (module, help). Modules define ``main(argv: list[str]) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "infer": ("karyopipe.pipeline.cli", "run the full pipeline on spreads: overlay, karyogram, report"),
    "review": ("karyopipe.pipeline.review", "apply a reviewer's corrections to an infer report and redraw the karyogram"),
    "case": ("karyopipe.pipeline.case", "one patient's case (modal karyotype, ISCN clones) from its cells' reports"),
    "data-summary": ("karyopipe.data.summary", "summarise any supported dataset: format, images, cells, classes, problems"),
    "synth": ("karyopipe.synth.cli", "generate synthetic spreads with exact ground truth (COCO)"),
    "bench-geometry": ("karyopipe.geometry.bench", "benchmark axis, centromere and straightening on synthetic chromosomes"),
    "train-seg": ("karyopipe.segmentation.train", "train the Mask R-CNN segmentation model"),
    "eval-seg": ("karyopipe.segmentation.evaluate", "score segmentation with COCO metrics"),
    "train-cls": ("karyopipe.classification.train", "train the hybrid ResNet classifier"),
    "eval-cls": ("karyopipe.classification.evaluate", "score classification on crops or annotated spreads"),
    "eval-fragments": ("karyopipe.classification.fragments", "how a classifier reads pieces of chromosomes (how often it calls them Y)"),
    "calibrate-cls": ("karyopipe.classification.calibrate", "fit the classifier's temperature on validation cells"),
    "join-cls": ("karyopipe.classification.ensemble", "join trained classifiers into one ensemble weights file"),
    "bench-karyotype": ("karyopipe.karyogram.bench", "benchmark karyotype assignment on synthetic spreads"),
    "relabel-frames": ("karyopipe.classification.frames", "label every chromosome of annotated frames from the cell's karyotype (training labels)"),
    "label-bioimlab": ("karyopipe.data.label_bioimlab", "give BioImLab metaphase polygons their classes from the crops"),
    "bench-pipeline": ("karyopipe.pipeline.bench", "time model loading and the whole pipeline per image size"),
    "calibrate-junk": ("karyopipe.pipeline.calibrate", "fit how often segmented objects are junk, by detection score"),
    "fit-outline": ("karyopipe.segmentation.outline", "fit the per-pixel outline model on the segmenter's training spreads"),
    "eval-e2e": ("karyopipe.pipeline.evaluate", "end-to-end detection, classification and karyotype scores"),
}


def add_precision_argument(parser, help: str | None = None) -> None:
    """``--precision``, shared by the commands that run the networks (``InferenceSettings.precision``,
    ``Classifier.set_precision``)."""
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help=help or "network arithmetic (default float32); bfloat16 is faster on CPUs with native "
                                     "bfloat16 (AVX512-BF16, AMX), slower on others")


def add_rescue_argument(parser) -> None:
    """``--no-rescue``, ``--zoom-look``, ``--no-hidden-look`` and ``--second-segmenter``, shared by the commands that run the whole
    pipeline (``from_pretrained``)."""
    parser.add_argument("--no-rescue", action="store_true",
                        help="call an autosomal loss without first looking for the missing chromosome among weak "
                             "detections (scores 0.1 up to the junk calibration's floor)")
    parser.add_argument("--zoom-look", type=float, nargs="?", const=1.25, default=None, metavar="FACTOR",
                        help="if a loss remains after that look, look again at the spread FACTOR times larger "
                             "(default 1.25), where touching chromosomes detected as one may be seen apart; "
                             "off unless given (BENCHMARKS.md, End to end)")
    parser.add_argument("--no-hidden-look", dest="hidden_look", action="store_false",
                        help="call a loss without first splitting objects into the parts the segmenter also detected "
                             "inside them at a lower score (on by default; BENCHMARKS.md, End to end)")
    parser.add_argument("--second-segmenter", nargs="?", const=True, default=None, metavar="WEIGHTS",
                        help="if a loss remains after every look, let a second segmenter (default: the shipped R18, "
                             "mask_rcnn_karyotype_r18.pth) look for the missing chromosome; off unless given "
                             "(BENCHMARKS.md, End to end)")


def add_pairing_argument(parser) -> None:
    """``--pairing``, shared by the commands that assign karyotypes with the shipped weights."""
    parser.add_argument("--pairing", action="store_true",
                        help="also pair homologs by how alike their bands are (karyopipe.karyogram.pairing); "
                             "off by default: it costs accuracy under lab shifts (BENCHMARKS.md, Classification)")


def _usage() -> str:
    from karyopipe import __version__

    width = max(len(name) for name in COMMANDS)
    lines = [
        f"karyopipe {__version__}: automated human karyotyping",
        "",
        "usage: karyopipe COMMAND [options]   (karyopipe COMMAND --help for details)",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``karyopipe`` and ``python -m karyopipe``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from karyopipe import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"karyopipe: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            print(f"karyopipe {name}: this stage is not built yet ({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    return run_guarded(f"karyopipe {name}", module.main, rest)


def run_guarded(prog: str, func, argv: list[str]) -> int:
    """Call ``func(argv)``, turning any exception into a one-line error and exit code 2."""
    try:
        code = func(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse --help / usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:
        if os.environ.get("KARYOPIPE_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
