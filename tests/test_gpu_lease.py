"""tools/gpu_lease: chunked segmentation training that resumes, and weights returned in parts."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_segmentation import tube_image, write_labelme

ROOT = Path(__file__).resolve().parents[1]
ROUND = ROOT / "tools" / "gpu_lease" / "round.sh"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None, reason="needs bash and coreutils")
def test_round_trains_in_resumed_chunks_and_sends_the_weights_back_in_parts(tmp_path):
    from karyopipe.weights import load_weights

    kit = tmp_path / "kit"
    data = kit / "data" / "metaphases"
    data.mkdir(parents=True)
    for k in range(6):
        image, polys = tube_image(k)
        write_labelme(data, f"original_{k + 1}", image, polys)
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    # The budget (6 s of training) must outlast the first call's single step, even on a loaded machine,
    # or that call would end the run instead of stopping it.
    env = dict(os.environ, KIT=str(kit), RUN=str(run), OUT=str(out), PYTHON=sys.executable, DEVICE="cpu",
               BACKBONE="resnet18", FPN="32", CROP="96", BATCH="1", STEPS="2", WARMUP="1", WORKERS="0",
               THREADS="1", VAL_IMAGES="2", BUDGET="0.1", N_SYNTH="1", PART_MB="4", PARTS_PER_CALL="4")

    def call(*args):
        for old in out.iterdir():
            old.unlink()
        done = subprocess.run(["bash", str(ROUND), *args], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    first = call("train", "0.0001")
    assert "starting a new run" in first and "stopped after" in first
    assert {p.name for p in out.iterdir()} == {"train.log", "metrics.json"}
    second = call("train", "5")
    assert "resumed from" in second and "smallest count error" in second
    call("finish")
    sent = sorted(p.name for p in out.iterdir() if ".part" in p.name)
    assert len(sent) == 4 and (out / "SHA256SUMS").is_file()
    parts = {p.name: p.read_bytes() for p in out.iterdir() if ".part" in p.name}
    digests = dict(line.split()[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(digests) == {"best.pth", "latest.pth"}
    fetch = 2
    while True:
        text = call("fetch", str(fetch))
        if "no parts after" in text:
            break
        parts |= {p.name: p.read_bytes() for p in out.iterdir() if ".part" in p.name}
        fetch += 1
    assert fetch > 2 and len(parts) == len(list((run / "parts").glob("*.pth.part*")))
    for name, digest in digests.items():
        joined = tmp_path / name
        joined.write_bytes(b"".join(parts[part] for part in sorted(parts) if part.startswith(name + ".part")))
        assert hashlib.sha256(joined.read_bytes()).hexdigest() == digest
        _, config, card = load_weights(joined)
        assert config["model"]["backbone"] == "resnet18" and "score_thresh" in config["inference"]
        # both carry the outline model fitted on the machine, and the count threshold the run chose
        assert "outline_model" in config and "training spreads" in card["inference"]
