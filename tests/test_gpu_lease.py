"""tools/gpu_lease: chunked segmentation training that resumes, and weights returned in parts."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from test_segmentation import tube_image, write_labelme

ROOT = Path(__file__).resolve().parents[1]
ROUND = ROOT / "tools" / "gpu_lease" / "round.sh"


NEEDS_SHELL = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None,
                                 reason="needs bash and coreutils")


def _lease(tmp_path, **settings):
    """A kit of six tiny spreads, and ``call(*args, ok=True)`` running round.sh as a lease's call would."""
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
               THREADS="1", VAL_IMAGES="2", BUDGET="0.1", N_SYNTH="1", PART_MB="4", PARTS_PER_CALL="4", **settings)
    return kit, run, out, _caller(ROUND, env, out)


def _caller(script, env, out):
    """``call(*args, ok=True)``: one lease call of ``script``, with ``out`` emptied first as the lease does."""

    def call(*args, ok=True):
        for old in out.iterdir():
            old.unlink()
        done = subprocess.run(["bash", str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True)
        assert (done.returncode == 0) == ok, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout + done.stderr

    return call


def _archived(path) -> set:
    with tarfile.open(path) as archive:
        return {member.name for member in archive.getmembers() if member.isfile()}


def _fetch_the_rest(call, out, parts, run, where):
    """Call ``fetch 2``, ``fetch 3``, ... until no part is left; join the parts into ``where``, one file a name."""
    fetch = 2
    while True:
        text = call("fetch", str(fetch))
        if "no parts after" in text:
            break
        parts |= {p.name: p.read_bytes() for p in out.iterdir() if ".part" in p.name}
        fetch += 1
    assert fetch > 2 and len(parts) == len(list((run / "parts").glob("*.pth.part*")))
    joined = {}
    for name in sorted({part.split(".part")[0] for part in parts}):
        joined[name] = where / name
        joined[name].write_bytes(b"".join(parts[part] for part in sorted(parts) if part.startswith(name + ".part")))
    return joined


@NEEDS_SHELL
def test_round_trains_in_resumed_chunks_and_sends_the_weights_back_in_parts(tmp_path):
    from karyopipe.weights import load_weights

    kit, run, out, call = _lease(tmp_path)
    first = call("train", "0.0001")
    assert "starting a new run" in first and "stopped after" in first
    assert {p.name for p in out.iterdir()} == {"train.log", "metrics.json"}
    second = call("train", "5")
    assert "resumed from" in second and "smallest count error" in second
    finished = call("finish")
    sent = sorted(p.name for p in out.iterdir() if ".part" in p.name)
    assert len(sent) == 4 and (out / "SHA256SUMS").is_file()
    parts = {p.name: p.read_bytes() for p in out.iterdir() if ".part" in p.name}
    digests = dict(line.split()[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(digests) == {"best.pth", "latest.pth"}
    fetched = _fetch_the_rest(call, out, parts, run, tmp_path)
    for name, digest in digests.items():
        joined = fetched[name]
        assert hashlib.sha256(joined.read_bytes()).hexdigest() == digest
        _, config, card = load_weights(joined)
        assert config["model"]["backbone"] == "resnet18" and "score_thresh" in config["inference"]
        # both carry the count threshold the run chose, and the outline model fitted on the machine
        # (unless the tiny model found too little to fit it on, which finish reports and survives)
        assert "training spreads" in card["inference"]
        assert ("outline_model" in config) == (f"fit-outline failed for {name}" not in finished)


@NEEDS_SHELL
def test_round_continues_from_weights_that_arrive_over_two_calls(tmp_path):
    from test_segmentation import _tiny_weights

    from karyopipe.weights import load_weights

    start = _tiny_weights(tmp_path)
    staged, machine = tmp_path / "staged", tmp_path / "machine"
    staged.mkdir()
    machine.mkdir()
    kit, run, out, call = _lease(tmp_path, STAGE=str(machine))
    packed = subprocess.run(["bash", str(ROOT / "tools" / "gpu_lease" / "pack_init.sh"), str(start)], cwd=ROOT,
                            env=dict(os.environ, KIT=str(kit), STAGE=str(staged)), capture_output=True, text=True)
    assert packed.returncode == 0, packed.stderr
    assert sorted(p.name for p in staged.iterdir()) == [".gpu_init_1", ".gpu_init_2"]

    def carry(folder):  # what the lease does with a carried folder: a copy in the machine's checkout
        shutil.copytree(staged / folder, machine / folder, dirs_exist_ok=True)

    carry(".gpu_init_1")
    assert "1 of 2 parts here" in call("stage")
    # training cannot start from half a file
    assert "have not all arrived" in call("train", "0.0001", ok=False)
    carry(".gpu_init_2")
    shutil.rmtree(machine / ".gpu_init_1")  # a later call's copy need not keep an earlier call's folders
    assert "all 2 parts joined and checked" in call("train", "0.0001")
    _, config, card = load_weights(run / "best.pth")
    # the run goes on from the staged weights: their model (not the BACKBONE/FPN of the environment)
    assert config["model"] == load_weights(start)[1]["model"] and "initialised from" in card["training"]
    assert "resumed from" in call("train", "0.0001")
    # a damaged part is caught before anything trains on it
    (run / "init.pth").unlink()
    carry(".gpu_init_1")
    carry(".gpu_init_2")
    (machine / ".gpu_init_2" / "init.pth.part01").write_bytes(b"not the weights")
    assert "do not match" in call("stage", ok=False)


def _packed_toy_crops(tmp_path) -> dict:
    """A toy crop folder packed as ``pack.sh CLS_DATA=1`` packs the real ones; the settings that find it."""
    from test_classification import _write_toy_folder

    _write_toy_folder(tmp_path / "crops" / "toy")
    (tmp_path / "cls_kit").mkdir()
    with tarfile.open(tmp_path / "cls_kit" / "cls_data.tar.xz", "w:xz") as archive:
        archive.add(tmp_path / "crops" / "toy", arcname="toy")
    return dict(CLS_KIT=str(tmp_path / "cls_kit"), CLS_DATA_DIR=str(tmp_path / "machine_crops"), FOLDERS="toy",
                N_SYNTH_CROPS="0")


@NEEDS_SHELL
def test_cls_round_trains_members_side_by_side_in_chunks_and_sends_the_joined_weights(tmp_path):
    from karyopipe.weights import load_weights

    kit, run, out = tmp_path / "kit", tmp_path / "run", tmp_path / "out"
    kit.mkdir()
    out.mkdir()
    crops = _packed_toy_crops(tmp_path)
    env = dict(os.environ, KIT=str(kit), RUN=str(run), OUT=str(out), PYTHON=sys.executable, DEVICE="cpu",
               MEMBERS="pca geometry", EPOCHS="2", WIDTH="8", THREADS="1", WORKERS="1", PCA_ARGS="", GEOMETRY_ARGS="",
               **crops)
    call = _caller(ROOT / "tools" / "gpu_lease" / "cls_round.sh", env, out)

    # a bare machine with no crops carried says what to carry
    hidden = Path(crops["CLS_KIT"]).rename(tmp_path / "not_carried")
    assert "carry" in call("stage", ok=False)
    hidden.rename(crops["CLS_KIT"])
    assert "crops unpacked" in call("stage")
    # the crops stay on the warm machine: later calls need not carry them
    shutil.rmtree(crops["CLS_KIT"])
    first = call("train", "0.000001")
    assert first.count("starting a new run") == 2 and first.count("stopped after epoch 1 of 2") == 2
    # one archive, whatever the number of members: a call brings back at most 8 files
    assert {p.name for p in out.iterdir()} == {"cls_logs.tar.gz"}
    assert _archived(out / "cls_logs.tar.gz") == {f"{m}/{f}" for m in ("pca", "geometry")
                                                  for f in ("train.log", "metrics.jsonl")}
    assert "has not finished" in call("finish", ok=False)
    second = call("train", "5")
    assert "starting a new run" not in second and "stopped after" not in second
    assert all((run / m / "weights.pth").is_file() for m in ("pca", "geometry"))
    assert call("train", "5").count("finished") == 2  # nothing left to train
    call("finish")
    assert {p.name for p in out.iterdir()} == {"joined.pth", "SHA256SUMS", "cls_logs.tar.gz"}
    assert {"pca/result.json", "geometry/result.json"} <= _archived(out / "cls_logs.tar.gz")
    digest, name = (out / "SHA256SUMS").read_text().split()
    assert name == "joined.pth" and hashlib.sha256((out / "joined.pth").read_bytes()).hexdigest() == digest
    _, config, _ = load_weights(out / "joined.pth")
    assert [m["preprocess"] for m in config["members"]] == ["pca", "geometry"]
    # each member kept its whole history over the two calls
    assert [json.loads(line)["epoch"] for line in (run / "pca" / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@NEEDS_SHELL
def test_both_trains_the_segmenter_and_the_classifier_in_the_same_calls(tmp_path):
    from karyopipe.weights import load_weights

    kit, _, out, _ = _lease(tmp_path)
    seg_run, cls_run = tmp_path / "seg", tmp_path / "cls"
    env = dict(os.environ, KIT=str(kit), OUT=str(out), PYTHON=sys.executable, DEVICE="cpu", SEG_RUN=str(seg_run),
               CLS_RUN=str(cls_run), STAGING=str(tmp_path / "staging"), SEG_WORKERS="0", SEG_THREADS="1",
               CLS_WORKERS="0", CLS_THREADS="1", BACKBONE="resnet18", FPN="32", CROP="96", BATCH="1", STEPS="2",
               WARMUP="1", VAL_IMAGES="2", BUDGET="0.1", N_SYNTH="1", PART_MB="4", MEMBERS="pca", EPOCHS="2",
               WIDTH="8", PCA_ARGS="", CLS_LR="1e-3", **_packed_toy_crops(tmp_path))
    call = _caller(ROOT / "tools" / "gpu_lease" / "both.sh", env, out)

    staged = call("stage")
    assert "== segmenter: exit 0" in staged and "crops unpacked" in staged
    first = call("train", "0.0001")
    assert "== segmenter: exit 0" in first and "== classifier: exit 0" in first
    assert {p.name for p in out.iterdir()} == {"logs.tar.gz"}  # the small files of both, as one of a call's 8
    logs = _archived(out / "logs.tar.gz")
    assert {"segmenter/call.log", "segmenter/train.log", "segmenter/metrics.json", "classifier/call.log",
            "classifier/pca/train.log", "classifier/pca/metrics.jsonl"} <= logs
    with tarfile.open(out / "logs.tar.gz") as archive:
        assert "starting a new run" in archive.extractfile("segmenter/call.log").read().decode()
        assert "stopped after epoch 1 of 2" in archive.extractfile("classifier/pca/train.log").read().decode()
    call("train", "5")
    # each stage kept its own settings: the classifier's learning rate is not the segmenter's
    assert "lr 0.001 " in load_weights(cls_run / "pca" / "weights.pth")[2]["training"]
    call("finish")
    sent = {p.name for p in out.iterdir()}
    parts = {name for name in sent if ".part" in name}
    assert sent - parts == {"joined.pth", "joined.SHA256SUMS", "SHA256SUMS", "logs.tar.gz"}
    assert len(parts) == 3  # with joined.pth, under what one call returns
    digest, _ = (out / "joined.SHA256SUMS").read_text().split()
    assert hashlib.sha256((out / "joined.pth").read_bytes()).hexdigest() == digest
    assert load_weights(out / "joined.pth")[1]["preprocess"] == "pca"
    digests = dict(line.split()[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    parts = {p.name: p.read_bytes() for p in out.iterdir() if ".part" in p.name}
    fetched = _fetch_the_rest(call, out, parts, seg_run, tmp_path)
    assert {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in fetched.items()} == digests
