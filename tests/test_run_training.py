"""run_training.sh: the classification stage trains both members, joins them, and picks up after an interruption."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_classification import _write_toy_folder

ROOT = Path(__file__).resolve().parents[1]


def _run_training(tmp_path: Path, data_root: Path) -> str:
    env = dict(os.environ, DATA_ROOT=str(data_root), RUNS=str(tmp_path / "runs"), WEIGHTS=str(tmp_path / "weights"),
               PYTHON=sys.executable, STAGES="cls", THREADS="1", EPOCHS_CLS="2", WIDTH_PCA_CLS="8", WIDTH_GEOMETRY_CLS="12",
               BATCH_CLS="16",
               PCA_ARGS_CLS="--val-fraction 0.2 --test-fraction 0.2",
               GEOMETRY_ARGS_CLS="--val-fraction 0.2 --test-fraction 0.2", PRECISION_CLS="bfloat16")
    done = subprocess.run(["bash", str(ROOT / "run_training.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="run_training.sh needs bash")
def test_classification_stage_joins_both_members_and_resumes_after_an_interruption(tmp_path):
    from karyopipe.classification.classifier import Classifier
    from karyopipe.weights import load_weights

    data_root = tmp_path / "data"
    _write_toy_folder(data_root / "bioimlab" / "crops", cells=5)
    _write_toy_folder(data_root / "gband612", cells=5)
    joined = tmp_path / "weights" / "karyotype_classifier_best.pth"

    first = _run_training(tmp_path, data_root)
    assert "resuming" not in first and "already trained" not in first
    _, config, _ = load_weights(joined)
    assert [m["preprocess"] for m in config["members"]] == ["pca", "geometry"]
    assert [m["width"] for m in config["members"]] == [8, 12]  # each member at its own width, as shipped
    for member in ("pca", "geometry"):
        run = tmp_path / "runs" / f"cls_{member}"
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
        assert "bfloat16 autocast steps" in load_weights(run / "weights.pth")[2]["training"]
    assert Classifier.from_pretrained(joined) is not None

    # An interruption during the second member: the first is kept as trained, the second resumes from last.pt.
    pca_weights = tmp_path / "runs" / "cls_pca" / "weights.pth"
    pca_digest = hashlib.sha256(pca_weights.read_bytes()).hexdigest()
    (tmp_path / "runs" / "cls_geometry" / "weights.pth").unlink()
    joined.unlink()
    second = _run_training(tmp_path, data_root)
    assert "pca member already trained" in second and "resuming geometry member" in second
    assert hashlib.sha256(pca_weights.read_bytes()).hexdigest() == pca_digest
    assert (tmp_path / "runs" / "cls_geometry" / "weights.pth").is_file() and joined.is_file()
