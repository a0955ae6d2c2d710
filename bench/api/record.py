"""Run records: the typed, versioned schema every table is rebuilt from.

One unit = (suite, dataset, method, config hash, seed). ``bench run`` writes its
`Record` as ``<results>/<suite>/<dataset>/<method>/<config_hash>/seed<seed>.json`` (the
paths, locks and completeness are `bench.engine.records`'), with the per-sample scores
beside it in ``seed<seed>.npz``. Readers get a `Record` and use its fields and accessors;
the fallbacks for what older files lack live here, once.

Schema (``schema_version`` "1.0"), the top-level keys of the JSON:

- identity: ``suite``, ``preset``, ``dataset``, ``method``, ``seed``, ``config_hash``,
  ``config`` (the method's resolved config), ``budget`` (epochs, batch sizes, step cap),
  ``task``, ``class_names``; ``status`` ("ok" | "failed") and ``error`` (null, or
  ``{type, message, traceback}`` for a failed unit: `RunError`)
- ``data`` (`Data`): split hash, data files (path -> MD5), the pixels' hash, duplicates
  across splits, n per split, source, synthetic, licence, notes; the split hash, the MD5s
  and the pixel hash are part of the unit's identity (`Data.identity`)
- ``provenance`` (`Provenance`): git commit and dirty flag, package versions, device,
  precision, ``execution`` (`Execution`: autocast, threads, cores, memory format), processes,
  python, platform, host, command line, started/finished (UTC ISO)
- ``selection`` (`Selection`): what fit() chose on validation (metric, best epoch and value,
  history, ``resumed_after_epoch``), and what the method adds (its priors' pretraining,
  ``noise_floor`` blocks)
- ``timings`` (`Timings`): ``train_s``, ``train_images_per_s``, ``inference_images_per_s``,
  ``wall_s``; ``memory`` (`Memory`): ``peak_mb`` and ``kind`` (CUDA max allocated, or
  process max RSS on CPU)
- ``metrics``: ``{"val": {name: value}, "test": {name: value}}``, NaN written as null
- ``replaces`` (optional): the data identity, commit and finish time of the ok record this
  one overwrote (or the unreadable file it replaced); ``predictions``: the .npz's file name
- the task's payload (`Record.payload`: every other top-level key, written by the task's
  scoring and rescoring). Classification: ``per_class`` ({"test": {"auroc": [...], ...}}),
  ``predicted_share`` ({split: [share of images predicted as each class]}), ``priors``
  ({name: {split: {metric: value, "predicted_share": [...]}}} of the method's own prior
  models), ``extras`` ({split: {name: mean}}), ``calibration``. Generation: ``per_class``
  (FID per class, image counts), ``evaluation`` (scoring options, ``extractor_info``),
  ``ordinal_consistency``. Restoration: ``evaluation`` (degradation, intervals).

Versions: a file is read when its major version is this one's. Every field added within
1.x is optional in the file: a file written before it lacks it and reads as the field's
default (`Provenance.execution` None, `Data.images_sha256` None), and such a missing key is
not written back, so ``Record.from_dict(d).to_dict() == d`` for every file; keys this code
does not name are kept as they are (`Section.other`, `Record.payload`). The committed
files under results/ are read as they are and never rewritten by this migration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SCHEMA_VERSION = "1.0"


def atomic_write(path: Path, write, *, by_path: bool = False) -> None:
    """Write `path` whole or not at all: `write` fills a file of the same name in a private
    temporary folder beside it (an open binary file, or with `by_path` its path: torch.save
    stores the file's name inside its archive, so the bytes are a direct save's), which is
    then renamed into place. The file gets the usual mode (0644 under umask 022)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as folder:
        staged = Path(folder) / path.name
        if by_path:
            write(staged)
        else:
            with open(staged, "wb") as f:
                write(f)
        os.replace(staged, path)


def jsonable(value: Any) -> Any:
    """`value` as plain JSON: NaN and infinities as null, numpy scalars and paths unwrapped."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(kw_only=True)
class Section:
    """A block of a record: its known keys as typed fields, every other key kept in
    `other` (nothing in a file is lost), and the known keys the file lacked (`absent`: it
    was written before they existed), which read as their defaults and are not written
    back unless set to something else."""

    other: dict[str, Any] = field(default_factory=dict, repr=False)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    #: fields that hold a nested section: name -> its class
    NESTED: ClassVar[dict[str, type[Section]]] = {}
    #: fields of the object, not of the file
    NOT_WRITTEN: ClassVar[frozenset[str]] = frozenset({"other", "absent"})

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name not in cls.NOT_WRITTEN]

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        known = cls.keys()
        values = {k: d[k] for k in known if k in d}
        for name, kind in cls.NESTED.items():
            if isinstance(values.get(name), dict):
                values[name] = kind.from_dict(values[name])
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and _required(f)]
        if missing:
            raise ValueError(f"not a {cls.__name__.lower()}: no {', '.join(missing)}")
        rest = {k: v for k, v in d.items() if k not in known}
        return cls(**values, other=rest, absent=frozenset(k for k in known if k not in d))

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.NOT_WRITTEN or (f.name in self.absent and value == _default(f)):
                continue
            out[f.name] = value.to_dict() if isinstance(value, Section) else value
        return {**out, **self.other}


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@dataclass(kw_only=True)
class Execution(Section):
    """How the unit computed (``provenance.execution``; records before it lack it)."""

    precision: str | None = None
    autocast: str | None = None
    threads: int | None = None
    omp_num_threads: str | None = None
    allowed_cores: int | None = None
    cpu_native_bf16: bool | None = None
    cpu_model: str | None = None  # bench.train.device.cpu_identity; records before it lack it
    cpu_isa: list[str] | None = None
    cpu_capability: str | None = None  # ATen's kernel dispatch level (AVX2, AVX512, ...)
    memory_format: str | None = None


@dataclass(kw_only=True)
class Provenance(Section):
    """Where, when and from which code a record was made."""

    git_commit: str | None = None
    git_dirty: bool = False
    packages: dict[str, str] = field(default_factory=dict)
    device: str = "?"
    precision: str = "fp32"  # records made before bf16 runs existed were fp32
    execution: Execution | None = None
    num_processes: int = 1
    python: str | None = None
    platform: str | None = None
    host: str | None = None
    command: str | None = None
    started: str = ""
    finished: str = ""

    NESTED = {"execution": Execution}

    def package(self, name: str) -> str:
        return self.packages.get(name, "?")

    @property
    def cpu(self) -> str:
        """The CPU that computed, with the instruction sets that set its kernels."""
        e = self.execution
        if e is None or e.cpu_model is None:
            return "CPU not recorded"
        return (
            f"{e.cpu_model} [{', '.join(e.cpu_isa or []) or 'no AVX2'}; kernels {e.cpu_capability}]"
        )

    @property
    def program(self) -> str:
        """The program of the command stored ('unknown' without one)."""
        return (self.command or "unknown").split(" ", 1)[0]

    @property
    def made_by_bench(self) -> bool:
        """Whether the command stored is the `bench` CLI (the console script or
        `python -m bench.cli`): only then does the record say how to remake it."""
        program = self.program.replace("\\", "/")
        return program.endswith(("/bench", "bench/cli.py")) or program == "bench"

    @property
    def commit_label(self) -> str:
        """'<commit>' or '<commit> (dirty)', 'unknown' outside a git checkout."""
        return f"{self.git_commit or 'unknown'}{' (dirty)' if self.git_dirty else ''}"


def machines(provenances) -> str:
    """The devices and the CPUs that made these records, for a table's Where line."""
    devices = "; ".join(sorted({p.device for p in provenances}))
    return f"{devices} ({'; '.join(sorted({p.cpu for p in provenances}))})"


@dataclass(kw_only=True)
class Data(Section):
    """What the unit was computed from."""

    split_hash: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # path -> MD5
    images_sha256: str | None = None  # None for paired data: its split hash covers the pixels
    duplicates_across_splits: Any = None
    n: dict[str, int] = field(default_factory=dict)
    source: str | None = None
    synthetic: bool = False
    licence: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. a file that is not the official one

    def identity(self) -> tuple:
        """The split hash, the MD5s of the data files (not their paths, which differ from
        one machine to the next) and the pixels' hash (a folder image changed under the
        same manifest)."""
        return self.split_hash, tuple(sorted((self.files or {}).values())), self.images_sha256

    def same_as(self, other: Data | None) -> bool:
        """Whether `other` names the same data (the pixels' hash compared where both
        have one: records written before it existed lack it)."""
        a, b = self.identity(), (other or Data()).identity()
        return a[:2] == b[:2] and (a[2] is None or b[2] is None or a[2] == b[2])


@dataclass(kw_only=True)
class Selection(Section):
    """What fit() chose on validation; a method adds its own keys (kept in `other`)."""

    selection_metric: str | None = None
    best_epoch: int | None = None
    best_val_value: float | None = None
    epochs_run: int | None = None
    train_images_seen: int = 0
    train_compute_s: float | None = None
    history: Any = None


@dataclass(kw_only=True)
class Timings(Section):
    train_s: float | None = None
    train_images_per_s: float | None = None
    inference_images_per_s: float | None = None
    wall_s: float | None = None


@dataclass(kw_only=True)
class Memory(Section):
    peak_mb: float | None = None
    kind: str | None = None


@dataclass(kw_only=True)
class RunError(Section):
    """Why a unit failed."""

    type: str = ""
    message: str = ""
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(kw_only=True)
class Record(Section):
    """One unit's record (see the module docstring); `other` is the task's `payload`."""

    schema_version: str = SCHEMA_VERSION
    suite: str
    preset: str
    dataset: str
    method: str
    seed: int
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    class_names: list[str] | None = None
    data: Data | None = None
    provenance: Provenance = field(default_factory=Provenance)
    replaces: dict[str, Any] | None = None
    status: str  # "ok" | "failed"
    error: RunError | None = None
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    selection: Selection = field(default_factory=Selection)
    timings: Timings = field(default_factory=Timings)
    memory: Memory = field(default_factory=Memory)
    predictions: str | None = None
    path: Path | None = None  # the file it was loaded from or saved to

    NESTED = {
        "data": Data,
        "provenance": Provenance,
        "error": RunError,
        "selection": Selection,
        "timings": Timings,
        "memory": Memory,
    }
    NOT_WRITTEN = Section.NOT_WRITTEN | {"path"}

    @property
    def payload(self) -> dict[str, Any]:
        """The task's own top-level keys (per_class, priors, evaluation, ...)."""
        return self.other

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def precision(self) -> str:
        return self.provenance.precision

    @property
    def label(self) -> str:
        """'dataset/method/seed<k>', as lists of records name one."""
        return f"{self.dataset}/{self.method}/seed{self.seed}"

    def split_metrics(self, split: str) -> dict[str, float | None]:
        """{metric: value} of a split ({} when the record has none)."""
        return self.metrics.get(split) or {}

    def metric(self, split: str, name: str) -> float | None:
        return self.split_metrics(split).get(name)

    def per_class(self, split: str) -> dict[str, Any]:
        return (self.payload.get("per_class") or {}).get(split) or {}

    def predicted_share(self, split: str) -> list[float] | None:
        """Share of a split's images predicted as each class (classification)."""
        return (self.payload.get("predicted_share") or {}).get(split)

    @property
    def priors(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{prior name: {split: metrics}} of the method's own prior models (classification)."""
        return self.payload.get("priors") or {}

    @property
    def evaluation(self) -> dict[str, Any]:
        """The scoring options and what they used (generation, restoration)."""
        return self.payload.get("evaluation") or {}

    @property
    def extractor_info(self) -> dict[str, Any]:
        """The feature extractor generation metrics were computed in (name, version, ...)."""
        return self.evaluation.get("extractor_info") or {}

    @property
    def extractor_name(self) -> str | None:
        return self.extractor_info.get("name")

    @property
    def rescored(self) -> list[dict[str, Any]]:
        """What each rescoring replaced or added, oldest first."""
        return self.payload.get("rescored") or []

    def note_rescored(self, entry: dict[str, Any]) -> None:
        """Add a rescoring's entry (what it replaced or added, when, by which commit)."""
        self.payload["rescored"] = [*self.rescored, entry]

    @property
    def predictions_path(self) -> Path | None:
        """The .npz beside the record file, where it has one."""
        return self.path.with_name(self.predictions) if self.path and self.predictions else None

    def load_predictions(self) -> dict[str, np.ndarray]:
        with np.load(self.predictions_path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def take_scores(self, fields: dict[str, Any]) -> None:
        """Put a task's scoring `fields` in: their ``metrics`` as the record's metrics,
        the rest into its payload (replacing what the same keys held)."""
        fields = dict(fields)
        self.metrics = fields.pop("metrics", self.metrics)
        self.payload.update(fields)

    def to_json(self) -> str:
        return json.dumps(jsonable(self.to_dict()), indent=1)

    @classmethod
    def load(cls, path: Path) -> Record:
        """The record in `path`; OSError, ValueError (not JSON, not a record, another
        major schema version) say why not."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"not a record: a JSON {type(data).__name__}, not an object")
        version = str(data.get("schema_version", ""))
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"schema version {version or 'missing'}, not {SCHEMA_VERSION}")
        record = cls.from_dict(data)
        record.path = Path(path)
        return record

    def save(self, path: Path) -> Path:
        """Write atomically (temporary file + rename): a record file that exists is whole."""
        text = self.to_json()
        atomic_write(Path(path), lambda f: f.write(text.encode()))
        self.path = Path(path)
        return self.path
