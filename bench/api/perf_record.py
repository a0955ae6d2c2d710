"""``bench perf`` records: how fast a method trains and infers, one file per
(method, config, device, precision, pattern, batch size) under
``<results>/perf/<method>/<config hash>/<device>-<precision>-<pattern>-b<batch>.json``.

Schema (``kind`` "perf", ``schema`` "perf/2"): ``method``, ``task``, ``preset``,
``config``, ``config_hash``, ``pattern`` ("ours", or "authors" for a method's
``AUTHORS_PATTERN``), ``input`` (`RandomInput`: the shape of the random images),
``batch_size`` and ``train_batch_size``, ``matmul_peak_gflops`` ({precision: GFLOP/s}
measured in the same run), ``results`` (what ``bench perf`` measured: for each of
``train``, ``inference`` and ``batch1`` its ``<key>_images_per_s``, ``_ms_per_image``,
``_flops_per_image``, ``_achieved_gflops``, ``_fraction_of_peak`` and ``_peak_memory``
({peak_mb, kind}); ``training_stages``: one entry per training stage, the method's own
last) and ``provenance`` (`Provenance`, as in a run record). As for run records, keys
this code does not name are kept, and the committed files are never rewritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.api.record import Provenance, Section, atomic_write, jsonable

PERF_SCHEMA = "perf/2"


@dataclass(kw_only=True)
class RandomInput(Section):
    """The shape of the random data a perf record was measured on."""

    image_size: int
    channels: int
    classes: int
    name: str = ""  # the dataset whose shape this is, if any
    weights: str = "random"
    images: str = "random uint8"

    @classmethod
    def of(cls, spec) -> RandomInput:
        """The shape of a dataset's images (its `DatasetSpec`)."""
        classes = max(1, len(spec.class_names))
        return cls(image_size=spec.size, channels=spec.channels, classes=classes, name=spec.name)


@dataclass(kw_only=True)
class PerfRecord(Section):
    kind: str = "perf"
    schema: str = PERF_SCHEMA
    method: str
    task: str
    preset: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str
    pattern: str = "ours"
    input: RandomInput
    batch_size: int
    train_batch_size: int | None = None
    matmul_peak_gflops: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)

    NESTED = {"input": RandomInput, "provenance": Provenance}

    @property
    def precision(self) -> str:
        return self.provenance.precision

    @property
    def trains(self) -> bool:
        """Whether the method has training to measure (a training-free floor has none)."""
        return "train_images_per_s" in self.results

    @property
    def stages(self) -> list[dict[str, Any]]:
        """The training stages, the method's own training last."""
        return self.results.get("training_stages") or []

    def rate(self, key: str, what: str = "images_per_s") -> float | None:
        """A measured number of `key` (train, inference, batch1), e.g. its images/s."""
        return self.results.get(f"{key}_{what}")

    @property
    def peak_mb(self) -> float:
        """The process's peak memory over training and inference."""
        return max(self.results[f"{k}_peak_memory"]["peak_mb"] for k in ("train", "inference"))

    @classmethod
    def load(cls, path: Path) -> PerfRecord:
        """The perf record in `path`; OSError or ValueError (not JSON, not a perf record of
        this schema) say why not."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or data.get("schema") != PERF_SCHEMA:
            raise ValueError(f"not a {PERF_SCHEMA} record")
        return cls.from_dict(data)

    def save(self, path: Path) -> Path:
        text = json.dumps(jsonable(self.to_dict()), indent=2, sort_keys=True, default=str)
        atomic_write(Path(path), lambda f: f.write((text + "\n").encode()))
        return Path(path)
