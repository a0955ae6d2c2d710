"""``bench perf``: how fast any registered method trains and infers, through its own verbs.

Nothing here knows a method: training is the method's ``fit`` under a
``TrainingProbe`` (every training stage, i.e. every ``train_loop`` call, runs a warm-up
step, one step under torch's FLOP counter and a few timed steps, then stops), and
inference is the task's verb (``predict`` / ``sample`` / ``restore``) on a batch of
random images, once under the FLOP counter (also the warm-up) and then timed, at the
chosen batch size and at batch 1. Weights are random and images are random uint8 of
the dataset's shape. A matmul peak (2048 x 2048, fp32, and bf16 where it is native or is
the run's precision) is measured in the same run on the same device, and every throughput is also given as achieved GFLOP/s and as
a fraction of the peak of the precision it ran in. Records go to
``<results>/perf/<method>/<config hash>/<device>-<precision>-<pattern>-b<batch>.json``.

``--authors-pattern`` runs a method with the options it declares in ``AUTHORS_PATTERN``
(for DiffMIC-v2: every encoder re-run at each sampling step, as the reference code
does) in fp32, for the side-by-side with our implementation.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.api.errors import BenchError
from bench.api.method import (
    Budget,
    TrainingProbe,
    config_dict,
    config_hash,
    config_identity,
)
from bench.api.perf_record import PerfRecord, RandomInput
from bench.api.record import Provenance
from bench.api.registry import METHODS, TASKS
from bench.engine.provenance import environment, now, peak_memory, reset_peak_memory
from bench.engine.runner import make_context
from bench.train.device import cpu_has_native_bf16, make_accelerator, sync_device

LONG_CALL_S = 20.0  # an inference call longer than this is timed once, not `repeats` times


def matmul_peak(device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of an n x n matmul in `dtype` on `device` (best of a short loop)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        sync_device(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync_device(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def random_data(task: str, shape: RandomInput, n: int, rng: np.random.Generator):
    """(spec, split) of `n` random images with balanced labels, in the task's format."""
    source = f"random uint8 images of {shape.name or 'the given'} shape (bench perf)"
    return TASKS.get(task).random_data(
        shape.image_size, shape.channels, shape.classes, n, rng, source
    )


def _rate(flops_per_image: float, images_per_s: float, peak: float) -> dict[str, float]:
    achieved = flops_per_image * images_per_s / 1e9
    return {
        "achieved_gflops": achieved,
        "fraction_of_peak": achieved / peak if peak > 0 else float("nan"),
    }


def run_perf(
    method: str,
    *,
    options: dict[str, Any] | None = None,
    shape: RandomInput | None = None,
    batch_size: int = 64,
    train_batch_size: int = 64,
    train_steps: int = 3,
    repeats: int = 2,
    authors_pattern: bool = False,
    precision: str = "auto",
    cpu: bool = False,
    results_dir: str | Path = "results",
    preset: str | None = None,
    log=print,
) -> tuple[PerfRecord, Path]:
    """Measure one method (options as given, e.g. a suite preset's) and write its record."""
    spec_entry = METHODS.get(method)
    cls = spec_entry.cls
    options = dict(options or {})
    if authors_pattern:
        pattern = getattr(cls, "AUTHORS_PATTERN", None)
        if not pattern:
            raise BenchError(
                f"bench perf: {method} declares no AUTHORS_PATTERN (options reproducing the reference code's pattern)"
            )
        options.update(pattern)
        precision = "fp32"
    shape = shape or RandomInput(image_size=224, channels=3, classes=5)
    config = spec_entry.make_config(options)
    accelerator, precision = make_accelerator(precision, cpu)
    device = accelerator.device
    # bf16's peak is measured where bf16 runs natively or is the precision of this run: on a
    # CPU without native bf16 one emulated 2048 x 2048 bf16 matmul takes tens of seconds
    native_bf16 = device.type != "cpu" or cpu_has_native_bf16()
    peaks = {
        "fp32": matmul_peak(device, torch.float32),
        "bf16": matmul_peak(device, torch.bfloat16) if native_bf16 or precision == "bf16" else None,
    }
    rng = np.random.default_rng(0)
    data_spec, train = random_data(cls.task, shape, max(2 * train_batch_size, shape.classes), rng)
    _, val = random_data(cls.task, shape, max(8, shape.classes), rng)
    budget = Budget(epochs=1, batch_size=train_batch_size, eval_batch_size=batch_size)
    probe = TrainingProbe(steps=train_steps)
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as scratch:
        ctx = make_context(
            accelerator, 0, budget, Path(scratch), Path(scratch), log=log,
            data_id="perf-random", probe=probe,
        )  # fmt: skip
        torch.manual_seed(0)
        m = cls(config, data_spec)
        reset_peak_memory(device)
        m.fit(train, val, ctx)
        train_memory = peak_memory(device)
        result: dict[str, Any] = {
            "training_stages": probe.stages,
            "train_peak_memory": train_memory,
        }
        if probe.stages:  # the method's own training is its last stage; earlier ones are its priors
            main = probe.stages[-1]
            result.update(
                train_images_per_s=main["images_per_s"],
                train_flops_per_image=main["flops_per_image"],
                **{
                    f"train_{k}": v
                    for k, v in _rate(
                        main["flops_per_image"], main["images_per_s"], peaks[precision]
                    ).items()
                },
            )
        for n, key in ((batch_size, "inference"), (1, "batch1")):
            _, split = random_data(cls.task, shape, n, rng)
            ctx.budget = dataclasses.replace(budget, eval_batch_size=n)
            reset_peak_memory(device)
            t_first = time.perf_counter()
            with FlopCounterMode(display=False) as counter:  # also the warm-up call
                out = TASKS.get(cls.task).infer(m, split, ctx)
            # a measurement of wrong outputs is none: shapes, finite values, probabilities
            TASKS.get(cls.task).check_outputs(out, split, data_spec, method)
            flops = counter.get_total_flops() / n
            sync_device(device)
            t0 = time.perf_counter()
            calls = (
                repeats if t0 - t_first < LONG_CALL_S else 1
            )  # a sampler of minutes is timed once
            for _ in range(calls):
                TASKS.get(cls.task).infer(m, split, ctx)
            sync_device(device)
            s = (time.perf_counter() - t0) / calls
            result.update(
                {
                    f"{key}_images_per_s": n / s,
                    f"{key}_ms_per_image": 1000 * s / n,
                    f"{key}_flops_per_image": flops,
                    f"{key}_peak_memory": peak_memory(device),
                    **{f"{key}_{k}": v for k, v in _rate(flops, n / s, peaks[precision]).items()},
                }
            )
    record = PerfRecord(
        method=method,
        task=cls.task,
        preset=preset,
        config=config_dict(config),
        config_hash=config_hash(method, config_identity(config), budget, precision),
        pattern="authors" if authors_pattern else "ours",
        input=shape,
        batch_size=batch_size,
        train_batch_size=train_batch_size,
        matmul_peak_gflops=peaks,
        results=result,
        provenance=Provenance.from_dict({**environment(device, precision, 1), "finished": now()}),
    )
    slug = re.sub(
        r"[^A-Za-z0-9]+", "-", f"{device.type}-{precision}-{record.pattern}-b{batch_size}"
    ).strip("-")
    method_dir = re.sub(r"[^A-Za-z0-9_.-]+", "-", method)
    path = Path(results_dir) / "perf" / method_dir / record.config_hash / f"{slug}.json"
    return record, record.save(path)


def run_perf_suite(
    suite_name: str,
    preset_name: str,
    *,
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    methods: list[str] | None = None,
    dataset: str | None = None,
    data_dir=None,
    batch_size: int = 64,
    train_steps: int = 3,
    repeats: int = 2,
    cpu: bool = False,
    results_dir: str | Path = "results",
    log=print,
) -> list[Path]:
    """Every method of a suite at a preset's options and train batch size, in each
    precision, on random data of the shape of the suite's first dataset (or `dataset`);
    methods that declare an authors' pattern are measured in it too."""
    from bench.data.load import dataset_source
    from bench.engine.config import load_suite

    suite = load_suite(suite_name)
    preset = suite.preset(preset_name)
    entries = [e for e in suite.methods if not methods or e.name in methods]
    if methods and len(entries) != len(methods):
        unknown = sorted(set(methods) - {e.name for e in entries})
        raise BenchError(
            f"methods {unknown} are not in suite {suite.name!r} ({', '.join(e.name for e in suite.methods)})"
        )
    entry = dataset or suite.datasets[0]
    shape = RandomInput.of(dataset_source(entry).load(data_dir=data_dir).spec)
    paths = []
    for e in entries:
        spec = METHODS.get(e.name)
        options = suite.options_for(e, preset, spec.preset_options_of, shape.name)
        runs = [(p, False) for p in precisions] + (
            [("fp32", True)] if getattr(spec.cls, "AUTHORS_PATTERN", None) else []
        )
        for precision, authors in runs:
            log(
                f"perf {e.name} ({precision}{', authors pattern' if authors else ''}) on {shape.name} shape ..."
            )
            record, path = run_perf(
                e.name,
                options=options,
                shape=shape,
                batch_size=batch_size,
                train_batch_size=preset.budget.batch_size,
                train_steps=train_steps,
                repeats=repeats,
                authors_pattern=authors,
                precision=precision,
                cpu=cpu,
                results_dir=results_dir,
                preset=preset.name,
                log=lambda msg: None,
            )
            log("  " + summary_line(record))
            paths.append(path)
    return paths


def summary_line(r: PerfRecord) -> str:
    train = (
        f"train {r.rate('train'):.1f} img/s ({100 * r.rate('train', 'fraction_of_peak'):.0f} % of peak)"
        if r.trains
        else "no training"
    )
    return (
        f"{train}; inference {r.rate('inference'):.1f} img/s at batch {r.batch_size} "
        f"({100 * r.rate('inference', 'fraction_of_peak'):.0f} % of peak); batch 1 {r.rate('batch1', 'ms_per_image'):.1f} ms"
    )
