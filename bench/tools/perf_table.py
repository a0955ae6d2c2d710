"""``leaderboards/perf.md``: the speed of every measured method, rebuilt from records.

Reads the ``bench perf`` records (``<results>/perf/**.json``, schema ``perf/2``) and,
for the wall time of real runs, the classification records of the ``full`` preset.
One table per (device, preset, input shape): one row per method and precision, with
the training and inference throughput, FLOPs per image, the fraction of the matmul
peak measured in the same run, batch-1 latency and peak memory; then the methods
measured in their authors' pattern beside ours, and the full-protocol training runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.api.perf_record import PerfRecord
from bench.api.record import Record, machines
from bench.api.registry import TASKS
from bench.engine.records import load_records

#: a training throughput below this fraction of the matmul peak is marked (issue target)
PEAK_TARGET = 0.40


def load_perf_records(results_dir: str | Path) -> list[PerfRecord]:
    """The newest record per (device, preset, input, method, precision, pattern, batch)."""
    newest: dict[tuple, PerfRecord] = {}
    for path in sorted((Path(results_dir) / "perf").rglob("*.json")):
        try:
            r = PerfRecord.load(path)
        except (OSError, ValueError):  # not a perf record of this schema
            continue
        p = r.provenance
        key = (
            p.device,
            r.preset,
            r.input.name,
            r.input.image_size,
            r.method,
            p.precision,
            r.pattern,
            r.batch_size,
        )
        if key not in newest or p.finished > newest[key].provenance.finished:
            newest[key] = r
    return list(newest.values())


def _num(value, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return (
        f"{value:,.{digits}f}" if abs(value) >= 10 or digits == 0 else f"{value:.{max(digits, 2)}g}"
    )


def _pct(fraction) -> str:
    return "n/a" if fraction is None or not np.isfinite(fraction) else f"{100 * fraction:.0f} %"


def _range(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "not measured"
    lo, hi = min(values), max(values)
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}"


def _stages(r: PerfRecord) -> str:
    earlier = r.stages[:-1]
    return "; ".join(f"{s['stage']} {_num(s['images_per_s'])} img/s" for s in earlier) or ""


def perf_rows(group: list[PerfRecord]) -> list[str]:
    ours = [r for r in group if r.pattern == "ours"]
    fp32 = {r.method: r for r in ours if r.precision == "fp32"}
    lines = [
        "| method | precision | train batch | train img/s | train GFLOP/img | train % of peak | inference batch | inference img/s "
        "| inference GFLOP/img | inference % of peak | batch-1 ms | bf16 / fp32 (train, inference) | peak MB (process) | earlier training stages |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(ours, key=lambda r: (r.method, r.precision != "fp32")):
        trains, frac = r.trains, r.rate("train", "fraction_of_peak")
        mark = " ↓" if trains and frac is not None and frac < PEAK_TARGET else ""
        speedup = ""
        if r.precision == "bf16" and r.method in fp32:
            base = fp32[r.method]
            t = (
                f"{r.rate('train') / base.rate('train'):.2f}x"
                if trains and base.rate("train")
                else "n/a"
            )
            speedup = f"{t}, {r.rate('inference') / base.rate('inference'):.2f}x"
        lines.append(
            f"| {r.method} | {r.precision} | {r.stages[-1]['batch_size'] if trains else ''} | "
            f"{_num(r.rate('train')) if trains else 'no training'} | "
            f"{_num(r.rate('train', 'flops_per_image') / 1e9, 3) if trains else ''} | {_pct(frac) + mark if trains else ''} | "
            f"{r.batch_size} | {_num(r.rate('inference'))} | {_num(r.rate('inference', 'flops_per_image') / 1e9, 3)} | "
            f"{_pct(r.rate('inference', 'fraction_of_peak'))} | {_num(r.rate('batch1', 'ms_per_image'))} | {speedup} | "
            f"{_num(r.peak_mb, 0)} | {_stages(r)} |"
        )
    return lines


def authors_rows(group: list[PerfRecord]) -> list[str]:
    authors = {r.method: r for r in group if r.pattern == "authors"}
    if not authors:
        return []
    lines = [
        "",
        "Methods that declare their authors' pattern (`AUTHORS_PATTERN`), inference at the same batch size:",
        "",
        "| method | ours: precision | ours img/s | authors' pattern (fp32) img/s | ours / authors' | batch-1 ms, ours / authors' |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(
        (r for r in group if r.pattern == "ours" and r.method in authors),
        key=lambda r: (r.method, r.precision),
    ):
        a = authors[r.method]
        lines.append(
            f"| {r.method} | {r.precision} | {_num(r.rate('inference'))} | "
            f"{_num(a.rate('inference'))} | {r.rate('inference') / a.rate('inference'):.1f}x | "
            f"{_num(r.rate('batch1', 'ms_per_image'))} / {_num(a.rate('batch1', 'ms_per_image'))} |"
        )
    return lines


def full_run_rows(results_dir: str | Path) -> list[str]:
    """Wall time and training throughput of the full-preset classification records."""
    records = [r for r in load_records(Path(results_dir), "classification") if r.preset == "full"]
    if not records:
        return []
    key = TASKS.get("classification").key_metrics[0]
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.method, r.precision, r.provenance.device), []).append(r)
    lines = [
        "",
        "## Full-protocol training runs (classification records, preset `full`)",
        "",
        "Each unit is one seed of the whole protocol (training, validation every epoch, test), one process.",
        "",
        "| dataset | method | precision | device | seeds | train img/s (mean) | wall time per unit, s "
        f"(mean; range) | test {key.upper()} (mean) | commit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, method, precision, device), rs in sorted(groups.items()):
        walls = [r.timings.wall_s for r in rs]
        speed = [r.timings.train_images_per_s or np.nan for r in rs]
        score = [r.metric("test", key) or np.nan for r in rs]
        commits = sorted({(r.provenance.git_commit or "?")[:7] for r in rs})
        lines.append(
            f"| {dataset} | {method} | {precision} | {device} | {len(rs)} | {np.nanmean(speed):.1f} | "
            f"{np.mean(walls):.0f}; {_range(walls)} | {np.nanmean(score):.3f} | {', '.join(commits)} |"
        )
    return lines


def render_perf(results_dir: str | Path) -> str:
    records = load_perf_records(results_dir)
    prov = [r.provenance for r in records]
    lines = [
        "# Speed of every method",
        "",
        f"_Generated by `bench perf --table` from {len(records)} records in `results/perf/` and the full-preset "
        "classification records; do not edit by hand._",
        "",
        "- **How** (`bench perf --suite NAME --preset P`): random weights and random uint8 images of the named dataset's shape. "
        "Training is the method's own `fit`: every training stage runs a warm-up step, one step under the FLOP counter and "
        "a few timed steps (loss, backward, optimiser) at the preset's batch size; the method's own training is its last stage, "
        "earlier stages (pretrained priors, D-Cube's diffusion model) are listed at the right. Inference is the task's verb "
        "(`predict`, `sample`, `restore`: the whole sampler for diffusion methods) at the batch size shown and at batch 1.",
        "- **FLOPs** per image from `torch.utils.flop_counter` (matrix multiplies and convolutions; training = forward + "
        "backward). **% of peak** = achieved GFLOP/s over the 2048 x 2048 matmul peak of the same precision, measured in "
        f"the same run on the same device; ↓ marks training below the {100 * PEAK_TARGET:.0f} % target. Above 100 % means the "
        "method's kernels (oneDNN convolutions, larger matrices) run faster than that matmul, which is a reference, not the "
        "hardware's ceiling; the peak itself varies between runs (range below). Peak memory on CPU is the process's maximum "
        "resident set (it only grows during a run, so later methods show the largest).",
    ]
    if records:
        peaks = {k: [r.matmul_peak_gflops[k] for r in records] for k in ("fp32", "bf16")}
        threads = sorted({str(p.execution.threads if p.execution else "?") for p in prov})
        lines += [
            f"- **Where**: {machines(prov)}; threads {', '.join(threads)}; matmul peak "
            f"fp32 {_range(peaks['fp32'])}, bf16 {_range(peaks['bf16'])} GFLOP/s; torch "
            f"{', '.join(sorted({p.package('torch') for p in prov}))}.",
            f"- **When**: {min(p.finished for p in prov)} to {max(p.finished for p in prov)} (UTC). **Code**: commit "
            f"{', '.join(sorted({(p.git_commit or 'unknown')[:7] + (' (dirty)' if p.git_dirty else '') for p in prov}))}.",
        ]
    groups: dict[tuple, list[PerfRecord]] = {}
    for r in records:
        i = r.input
        key = (r.provenance.device, r.preset or "none", i.name or "random", i.image_size)
        groups.setdefault((*key, i.channels, i.classes), []).append(r)
    for (device, preset, name, size, channels, classes), group in sorted(groups.items()):
        lines += [
            "",
            f"## {device}: preset `{preset}`, {name} shape ({size} px, {channels} channel(s), {classes} classes)",
            "",
        ]
        lines += perf_rows(group) + authors_rows(group)
    lines += full_run_rows(results_dir)
    return "\n".join(lines) + "\n"


def write_perf_table(
    results_dir: str | Path = "results", out_dir: str | Path = "leaderboards"
) -> Path:
    path = Path(out_dir) / "perf.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_perf(results_dir))
    return path
