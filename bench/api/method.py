"""The method interface every registered method implements, and how one is built.

A method is a class with a typed ``Config`` dataclass (defaults = the paper's values)
and a task. Classification methods implement ``fit(train, val, ctx)`` (model selection
on ``val`` only, never on test) and ``predict(split, ctx) -> probabilities [N, C]``;
generation methods ``fit`` and ``sample(labels, ctx) -> uint8 images``; restoration
methods ``fit`` on paired patches and ``restore(inputs, ctx) -> images``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.api.dataset import DatasetSpec, SplitData
from bench.api.errors import BenchError
from bench.api.options import check_options
from bench.api.registry import METHODS


@dataclass
class Scored:
    """What scoring a trained unit gives the runner: the record's fields (metrics,
    per_class, ...), the arrays of its ``.npz``, and the outputs made in `output_s`
    seconds (test predictions, samples or restorations) for the inference throughput."""

    fields: dict[str, Any]
    arrays: dict[str, np.ndarray]
    outputs: int
    output_s: float


@dataclass
class Prediction:
    """A classifier's outputs on a split: class probabilities [N, C], and per-sample
    outputs besides them by name (e.g. CARD's prediction-interval width [N]), saved in the
    record's .npz as ``{split}_{name}`` and summarised (mean) in the record."""

    probs: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """How much training a preset allows (the same for every method of a suite run)."""

    epochs: int = 1
    batch_size: int = 64
    eval_batch_size: int = 256
    max_steps: int | None = None  # optional cap on optimiser steps (smoke runs)
    patience: int | None = None  # stop a stage after this many validations without a better score


#: Budget fields added after records existed: left out of a unit's hash at these
#: defaults, so that every older record keeps its hash
LATER_BUDGET_DEFAULTS = {"patience": None}


def without_later_defaults(fields: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """`fields` less those added later (`later`: name -> default) that are at their default."""
    return {k: v for k, v in fields.items() if not (k in later and v == later[k])}


def budget_identity(fields: dict[str, Any]) -> dict[str, Any]:
    """A budget's fields as they define a unit: those added later are left out at their
    defaults, so a record written before a field existed has the same budget."""
    return without_later_defaults(fields, LATER_BUDGET_DEFAULTS)


@dataclass
class TrainingProbe:
    """``bench perf``'s view into training: with ``ctx.probe`` set, every training stage
    (each ``train_loop`` call) runs ``warmup`` steps, one step under torch's FLOP counter
    and ``steps`` timed steps, then stops without validation or checkpoints. What it
    measured is appended to ``stages``: stage name, batch size, images/s, FLOPs/image."""

    steps: int = 3
    warmup: int = 1
    stages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.warmup + 1 + self.steps


@dataclass
class RunContext:
    accelerator: Any
    seed: int
    budget: Budget
    checkpoint_dir: Path
    log: Callable[[str], None] = print
    progress: bool = True
    cache_dir: Path | None = None  # shared across units: pretrained priors keyed by hash
    data_id: str = ""  # identifies the data and its splits (the bundle's split hash)
    artifact_stem: Path | None = (
        None  # files a method writes beside its record: f"{stem}.<what>.png"
    )
    on_eval: Callable[[int, float], None] | None = (
        None  # each validation score (epoch, value): sweeps prune on it
    )
    checkpoint_every_s: float = (
        300.0  # training is checkpointed after validation at most this often (resume)
    )
    probe: TrainingProbe | None = (
        None  # bench perf: measure a few steps of each training stage, then stop
    )

    @property
    def device(self):
        return self.accelerator.device


class Method:
    """Base class; subclasses set ``task``, ``Config`` and implement the task's verbs."""

    task: ClassVar[str] = "classification"
    Config: ClassVar[type] = object

    def __init__(self, config, spec: DatasetSpec):
        self.config = config
        self.spec = spec

    @classmethod
    def inapplicable(cls, config, class_names: tuple[str, ...]) -> str | None:
        """Why this method, so configured, would not be itself on data with these classes
        (ODM's ordinal loss on 2 classes: the conditional DM again), or None. A suite run
        leaves such units out, and their table says why."""
        return None


class ClassificationMethod(Method):
    task = "classification"

    def fit(self, train: SplitData, val: SplitData, ctx: RunContext) -> dict[str, Any]:
        """Train; select the model on `val`; return what was selected (best epoch, value)."""
        raise NotImplementedError

    def predict(self, split: SplitData, ctx: RunContext) -> np.ndarray:
        """Class probabilities [N, C] (softmax rows, or per-label sigmoids for multilabel)."""
        raise NotImplementedError

    def predict_with_extras(self, split: SplitData, ctx: RunContext) -> Prediction:
        """The probabilities and any per-sample outputs besides them (what scoring reads);
        a method with such outputs (CARD's interval widths) overrides this, not `predict`."""
        return Prediction(self.predict(split, ctx))

    def prior_predictions(self, split: SplitData, ctx: RunContext) -> dict[str, np.ndarray]:
        """The probabilities [N, C] of the method's own prior models (e.g. DiffMIC-v2's DCG
        branches), by name, after ``fit``: recorded beside the method's, so that a table
        shows what the diffusion stage adds over its prior. None by default."""
        return {}


class GenerationMethod(Method):
    """Class-conditional image generators: ``fit`` on the training split (selection on
    ``val`` only), then ``sample(labels)`` -> uint8 images [N, H, W, C] at the data's size."""

    task = "generation"

    def fit(self, train: SplitData, val: SplitData, ctx: RunContext) -> dict[str, Any]:
        raise NotImplementedError

    def sample(self, labels: np.ndarray, ctx: RunContext) -> np.ndarray:
        raise NotImplementedError


class RestorationMethod(Method):
    """Image-to-image methods (denoising, modality conversion): ``fit`` on paired
    patches (selection on ``val`` only), then ``restore(inputs)`` -> outputs, float
    [N, H, W, C] on the data range [0, 1]."""

    task = "restoration"

    def fit(self, train, val, ctx: RunContext) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self, inputs: np.ndarray, ctx: RunContext) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class MethodSpec:
    """A registry entry: the class plus default overrides (e.g. which timm model)."""

    cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: a variant (e.g. an ablation) takes a suite preset's options for this method first
    preset_options_of: str | None = None

    def make_config(self, overrides: dict[str, Any] | None = None):
        return build_config(
            self.cls.Config, {**self.defaults, **(overrides or {})}, self.cls.__name__
        )

    def inapplicable(self, options: dict[str, Any], class_names) -> str | None:
        """`Method.inapplicable` for this entry with the options of a suite's preset."""
        return self.cls.inapplicable(self.make_config(options), tuple(class_names))


def build_config(config_cls: type, values: dict[str, Any], owner: str):
    """``config_cls(**values)``; an unknown option is named, with the closest known one,
    and so is an option of the wrong type (bench/api/options.py)."""
    check_options(config_cls, values, owner)
    return config_cls(**values)


def register_method(
    name: str, description: str = "", preset_options_of: str | None = None, **defaults
):
    """The one way to register a method. A class decorator, ``@register_method("diffmic_v2")``;
    a variant of a class is registered by a call in the class's file,
    ``register_method("resnet50", "ResNet-50", model="resnet50")(TimmClassifier)``, its
    keywords being its default options. A variant registered with
    ``preset_options_of="diffmic_v2"`` runs with that method's preset options (sizes,
    budgets of sub-models) under its own, so that ablations are sized like the method.
    Names with a prefix (``timm:<model>``) come from `register_method_prefix`."""

    def wrap(cls):
        text = description or next(iter((cls.__doc__ or "").strip().splitlines()), name)
        METHODS.add(name, MethodSpec(cls, defaults, text, preset_options_of), text)
        return cls

    return wrap


def register_method_prefix(
    prefix: str, factory: Callable[[str], MethodSpec], description: str
) -> None:
    """Resolve ``prefix:<rest>`` to ``factory(<rest>)``, a `MethodSpec` (checked like a
    registered method when it is looked up)."""
    METHODS.add_prefix(prefix, factory, description)


def method_tasks() -> tuple[str, ...]:
    """The tasks a method can have: those of the direct subclasses of `Method`, one per
    task (a new task defines its own beside its `bench.api.task.Task`). Not to be confused
    with a dataset's label task (`bench.api.dataset.LABEL_TASKS`)."""
    return tuple(sorted({c.task for c in Method.__subclasses__()}))


def check_method_spec(name: str, spec: Any) -> None:
    """What every registered method must be: a `MethodSpec` of a `Method` subclass of a
    known task, with a dataclass ``Config`` that accepts the spec's default options."""
    where = f"method {name!r}"
    if not isinstance(spec, MethodSpec):
        raise BenchError(f"{where} is registered as {type(spec).__name__}, not a MethodSpec")
    cls = spec.cls
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise BenchError(f"{where}: {cls!r} is not a subclass of bench.api.method.Method")
    if cls.task not in method_tasks():
        raise BenchError(f"{where}: task {cls.task!r} is not one of {', '.join(method_tasks())}")
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        raise BenchError(f"{where}: {cls.__name__}.Config must be a dataclass")
    unknown = set(spec.defaults) - {f.name for f in dataclasses.fields(cls.Config)}
    if unknown:
        raise BenchError(
            f"{where}: default options {sorted(unknown)} are not fields of {cls.__name__}.Config"
        )


METHODS.check = check_method_spec


def config_dict(config) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_identity(config) -> dict[str, Any]:
    """A config's fields as they define a unit (its hash): as with `budget_identity`,
    the fields a method added later (its Config's ``LATER_FIELDS``) are left out at
    their defaults, so a record written before such a field existed keeps its hash; and
    so are the fields its ``inert_fields()`` names, which do nothing in this config (e.g.
    how ODM computes its ordinal term, when its weight is 0)."""
    names = getattr(config, "LATER_FIELDS", ())
    later = {f.name: f.default for f in dataclasses.fields(config) if f.name in names}
    inert = set(config.inert_fields()) if hasattr(config, "inert_fields") else set()
    return {
        k: v
        for k, v in without_later_defaults(config_dict(config), later).items()
        if k not in inert
    }


def config_hash(
    method: str, config: dict[str, Any], budget: Budget, precision: str = "fp32"
) -> str:
    """Stable short hash of what defines a run's settings (the seed is kept apart).

    The precision is part of a unit's identity, so bf16 and fp32 runs of one config are
    separate units side by side; fp32, the only precision before bf16 on CPUs, is left
    out of the payload so that every older record keeps its hash."""
    settings = {
        "method": method,
        "config": config,
        "budget": budget_identity(dataclasses.asdict(budget)),
    }
    if precision != "fp32":
        settings["precision"] = precision
    payload = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Param:
    """One searchable option of a method (its class's ``SEARCH_SPACE``): ``field`` of
    its config, and its range; `bench sweep` (bench/tools/sweep.py) searches them."""

    field: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial, name: str):
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def grid(self, values: list | None = None) -> list:
        """Every declared value, or `values` (a subset, each checked against the space)."""
        if values is not None:
            return [self.declared(v) for v in values]
        if self.choices:
            return list(self.choices)
        if self.integer:
            return list(range(int(self.low), int(self.high) + 1))
        raise BenchError(
            f"a grid needs choices or an integer range; {self.field} is a continuous range"
        )

    def declared(self, value):
        """`value` (e.g. the string "4" from the command line) as a value of this space."""
        try:
            if self.choices:
                for c in self.choices:
                    if str(c) == str(value) or _same_number(c, value):
                        return c
            else:
                v = int(value) if self.integer else float(value)
                if self.low <= v <= self.high and (not self.integer or float(value) == v):
                    return v
        except (TypeError, ValueError):
            pass
        space = list(self.choices) if self.choices else f"[{self.low}, {self.high}]"
        raise BenchError(f"{value!r} is not a declared value of {self.field} (declared: {space})")


def _same_number(choice, value) -> bool:
    """1e-4 and "0.0001" are one choice; a string choice is matched by its text only."""
    if isinstance(choice, str):
        return False
    try:
        return float(choice) == float(value)
    except (TypeError, ValueError):
        return False
