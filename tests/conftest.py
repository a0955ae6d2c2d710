import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_SUITE = str(REPO / "tests" / "suites" / "tiny.yaml")


def real_data_dir() -> Path:
    return Path(os.environ.get("BENCH_DATA_DIR") or REPO.parent / "shared" / "data" / "medmnist").resolve()


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Real data dir from the environment (or ../shared), a private cache, offline."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(real_data_dir()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: a second intra-op thread only contends (10x slower on a busy 2-core
    box). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data_dir() -> Path:
    d = real_data_dir()
    if not (d / "breastmnist.npz").is_file():
        pytest.skip(f"real MedMNIST files not found in {d} (set BENCH_DATA_DIR)")
    return d
