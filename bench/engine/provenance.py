"""Where and with what a run happened: git state, package versions, device, memory."""

from __future__ import annotations

import platform
import resource
import socket
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

from bench.api.registry import loaded_plugins
from bench.train.device import execution_settings

PACKAGES = (
    "diffmed-bench",
    "torch",
    "torchvision",
    "timm",
    "accelerate",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "datasets",
)
REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


CODE_DIRS = ("bench", "methods", "baselines")


@lru_cache(maxsize=1)
def git_state() -> dict:
    """Commit and dirty flag of the code: a changed tracked file (results/ and
    leaderboards/ do not count) or a new file in the packages; untracked files elsewhere
    (a run script, its logs) do not change what ran."""
    commit = _git("rev-parse", "HEAD")
    changed = _git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":(exclude)results",
        ":(exclude)leaderboards",
    )
    new_code = _git("ls-files", "--others", "--exclude-standard", "--", *CODE_DIRS)
    dirty = None if changed is None or new_code is None else bool(changed or new_code)
    return {"git_commit": commit, "git_dirty": dirty}


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def environment(device: torch.device, precision: str, num_processes: int) -> dict:
    plugins = loaded_plugins()  # code from outside this repository: its file and hash
    return {
        **git_state(),
        "packages": package_versions(),
        "device": device_description(device),
        "precision": precision,
        "execution": execution_settings(precision),
        "num_processes": num_processes,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        **({"plugins": plugins} if plugins else {}),
    }


def now() -> str:
    """The current UTC time, ISO 8601 to the second (records' started / finished)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {
            "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "kind": "cuda_max_allocated",
        }
    return {
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "kind": "process_max_rss",
    }
