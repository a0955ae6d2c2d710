"""Finding data files: --data-dir, then $BENCH_DATA_DIR, then the user cache.

Downloads happen only when asked (``download=True``) or when the machine is online and
not told to stay offline; they are MD5-verified and written atomically. Offline, a
missing file fails at once with the exact file name and every place that was searched.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.request
import warnings
from pathlib import Path

from bench.api.errors import DataError, MissingDataError
from bench.api.record import atomic_write

OFFLINE_VARS = ("BENCH_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_md5_cache: dict[tuple[str, int, float], str] = {}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bench"


def search_dirs(data_dir: str | Path | None, subdir: str) -> list[Path]:
    """The directories searched, in order; the cache entry is also the download target."""
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get("BENCH_DATA_DIR"):
        dirs.append(Path(os.environ["BENCH_DATA_DIR"]).expanduser())
    dirs.append(cache_dir() / subdir)
    return dirs


def offline() -> bool:
    return any(
        os.environ.get(v, "").strip() not in ("", "0", "false", "False") for v in OFFLINE_VARS
    )


def online(host: str = "zenodo.org", timeout: float = 3.0) -> bool:
    if offline():
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def md5sum(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _md5_cache:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _md5_cache[key] = h.hexdigest()
    return _md5_cache[key]


def locate_file(
    filename: str,
    *,
    subdir: str,
    expected_md5: str | None,
    url: str | None,
    data_dir: str | Path | None = None,
    download: bool | None = None,
) -> tuple[Path, str]:
    """Return (path, md5) of `filename`, downloading it when allowed.

    ``download=None`` means: download if online. A found file whose MD5 differs from the
    official one is used with a warning; the caller records the MD5 it got.
    """
    dirs = search_dirs(data_dir, subdir)
    for d in dirs:
        path = d / filename
        if path.is_file():
            md5 = md5sum(path)
            if expected_md5 and md5 != expected_md5:
                warnings.warn(
                    f"{path}: MD5 {md5} differs from the official {expected_md5}; using it anyway",
                    stacklevel=2,
                )
            return path, md5
    looked = ", ".join(str(d) for d in dirs)
    hint = "set BENCH_DATA_DIR, pass --data-dir, or `bench fetch` it on a machine with internet"
    if download is None:  # automatic: only when online
        if url is None or not online():
            state = "offline mode is set" if offline() else "no connection to the download server"
            raise MissingDataError(
                f"data file {filename!r} not found; looked in: {looked} ({state}; {hint})"
            )
        download = True
    if not download or url is None:
        raise MissingDataError(
            f"data file {filename!r} not found; looked in: {looked} (download not requested; {hint})"
        )
    target = dirs[-1] / filename
    _download(url, target, expected_md5)
    return target, md5sum(target)


def _download(url: str, target: Path, expected_md5: str | None) -> None:
    """`url` into `target` whole (`atomic_write`), kept only when its MD5 is the expected one."""
    from tqdm import tqdm

    def fetch(out) -> None:
        digest = hashlib.md5()
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"download {target.name}"
            ) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        got = digest.hexdigest()
        if expected_md5 and got != expected_md5:
            raise DataError(f"download of {url} has MD5 {got}, expected {expected_md5}; not kept")

    try:
        atomic_write(target, fetch)
    except OSError as exc:
        raise DataError(f"could not download {url}: {exc}") from exc
