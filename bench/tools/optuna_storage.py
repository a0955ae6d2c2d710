"""Where a sweep's Optuna study is kept: an RDB URL (SQLite by default) or Optuna's
journal file, which workers on a shared file system can share; SQLite on a network file
system is refused (its locks do not hold there)."""

from __future__ import annotations

from pathlib import Path

from bench.api.errors import BenchError

#: file systems on which SQLite's locking is not safe for several writers
NETWORK_FS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb2",
    "smbfs",
    "lustre",
    "gpfs",
    "beegfs",
    "fuse.sshfs",
    "ceph",
}


def file_system(path: Path) -> str:
    """The type of the file system holding `path` (its longest mount point in
    /proc/mounts), or "" where that cannot be read."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    target = str(path.resolve())
    best = ("", "")
    for fields in mounts:
        if len(fields) > 2 and (
            target == fields[1] or target.startswith(fields[1].rstrip("/") + "/")
        ):
            best = max(best, (fields[1], fields[2]), key=lambda m: len(m[0]))
    return best[1]


def open_storage(url: str):
    """An Optuna storage: ``journal:///path/study.log`` (Optuna's journal file, safe for
    workers on a shared file system) or an RDB URL. SQLite waits on locks, and the first
    use by several workers at once (a race to create the schema) is retried; SQLite on a
    network file system is refused (its locks do not hold there)."""
    import time

    import optuna

    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        where = Path(url.removeprefix("sqlite:///")).parent
        fs = file_system(where)
        if fs in NETWORK_FS:
            raise BenchError(
                f"the Optuna storage {url} is SQLite on a network file system ({fs}): its locks do "
                f"not hold there; use --storage journal://{where}/<study>.log or a database URL"
            )
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as exc:  # noqa: BLE001 - sqlalchemy IntegrityError/OperationalError on a concurrent first use
            if attempt == 5:
                raise BenchError(f"cannot open the Optuna storage {url}: {exc}") from exc
            time.sleep(0.5 * (attempt + 1))
