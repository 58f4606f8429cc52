"""Shared fixtures. Real-data tests skip, with the reason, when ../shared/data is absent."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Preprocessing caches written by tests go to a temporary folder, not the checkout's .cache/.
os.environ.setdefault("KARYOPIPE_CACHE", tempfile.mkdtemp(prefix="karyopipe-test-cache-"))


def shared_data_root() -> Path | None:
    """``$KARYOPIPE_DATA`` or ``../shared/data`` beside the checkout, if present."""
    candidates = [os.environ.get("KARYOPIPE_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real data absent: set KARYOPIPE_DATA or put it at ../shared/data")
    return root


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    # CI machines have 2 cores; more torch threads than cores only slows tests down.
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
