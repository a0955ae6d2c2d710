"""The `bench` command: run, status, leaderboard, site, sweep, paper, reproduce, plots, list, perf, fetch."""

from __future__ import annotations

import argparse
import sys
import warnings

from bench.api.errors import BenchError
from bench.api.registry import add_plugins


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return int(value)


def _csv(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


def cmd_run(args) -> int:
    from bench.engine.config import load_suite, parse_seeds
    from bench.engine.outcome import UnitStatus
    from bench.engine.runner import run_suite

    if args.executor == "slurm":
        return submit_to_slurm(args)
    if args.jobs > 1:  # checked once here, then N processes share the units
        from bench.engine.jobs import run_jobs

        load_suite(args.suite).preset(args.preset)
        if args.seeds:
            parse_seeds(args.seeds, "bench run --seeds")
        return run_jobs(args.argv, args.jobs)
    outcomes = run_suite(
        args.suite,
        args.preset,
        datasets=args.datasets,
        methods=args.methods,
        seeds=parse_seeds(args.seeds, "bench run --seeds") if args.seeds else None,
        data_dir=args.data_dir,
        results_dir=args.results_dir,
        work_dir=args.work_dir,
        download=True if args.download else None,
        fallback_synthetic=args.fallback_synthetic,
        precision=args.precision,
        cpu=args.cpu,
        progress=not args.no_progress,
        checkpoint_every_s=args.checkpoint_every,
        rerun=args.rerun,
        allow_dirty=args.allow_dirty,
    )
    by = {s: [o for o in outcomes if o.status is s] for s in UnitStatus}
    failed, done, elsewhere = by[UnitStatus.FAILED], by[UnitStatus.OK], by[UnitStatus.ELSEWHERE]
    skipped = len(by[UnitStatus.COMPLETE])
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        running = f"{len(elsewhere)} running in another process, " if elsewhere else ""
        print(
            f"{len(done)} units run, {skipped} already complete, {running}{len(failed)} failed; records in {args.results_dir}/"
        )
        for o in failed:
            print(f"  FAILED {o.unit}: {o.error} ({o.record})")
    if state.num_processes > 1:  # left to interpreter exit, gloo's threads may abort a rank
        # ("terminate called without an active exception"); and a rank destroying its group
        # after the other has exited can wait for ever (torch 2.4): the ranks leave together
        state.wait_for_everyone()
        state.destroy_process_group()
    return 1 if failed else 0


def submit_to_slurm(args) -> int:
    from pathlib import Path

    from bench.tools.slurm import submit_run

    absolute = lambda p: str(Path(p).resolve()) if p else p  # noqa: E731 - tasks may start elsewhere
    rows = status_rows(args, "bench run --seeds")
    suite = args.suite if not Path(args.suite).is_file() else absolute(args.suite)
    run_kwargs = {
        "suite_name": suite, "preset_name": args.preset, "data_dir": absolute(args.data_dir),
        "results_dir": absolute(args.results_dir), "work_dir": absolute(args.work_dir),
        "precision": args.precision, "cpu": args.cpu, "progress": False,
        "checkpoint_every_s": args.checkpoint_every, "allow_dirty": args.allow_dirty,
    }  # fmt: skip
    return submit_run(run_kwargs, rows, slurm_options(args), args.dry_run)


def status_rows(args, seeds_flag: str) -> list[dict]:
    """`bench status`'s rows for a run's arguments (also what a SLURM submission reads)."""
    from bench.engine.config import parse_seeds
    from bench.tools.status import suite_status

    return suite_status(
        args.suite, args.preset, datasets=args.datasets, methods=args.methods,
        seeds=parse_seeds(args.seeds, seeds_flag) if args.seeds else None,
        data_dir=args.data_dir, results_dir=args.results_dir, precision=args.precision,
        cpu=args.cpu, work_dir=args.work_dir,
    )  # fmt: skip


def cmd_status(args) -> int:
    from bench.tools.status import status_lines

    rows = status_rows(args, "bench status --seeds")
    print("\n".join(status_lines(rows, args.suite, args.preset)))
    return 0


def cmd_leaderboard(args) -> int:
    from bench.tools.leaderboard import write_leaderboard

    paths = write_leaderboard(
        args.suite,
        results_dir=args.results_dir,
        out_dir=args.out_dir,
        reference=args.reference,
        test=args.test,
    )
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_rescore(args) -> int:
    from bench.engine.config import load_suite

    common = dict(datasets=args.datasets, results_dir=args.results_dir, force=args.force)
    if load_suite(args.suite).task == "classification":
        from bench.tasks.classification.rescore import rescore_classification

        lines = rescore_classification(args.suite, args.preset, **common)
    else:
        from bench.tasks.generation.rescore import rescore_generation

        if not args.preset:
            raise BenchError("bench rescore: a generation suite needs --preset")
        lines = rescore_generation(
            args.suite, args.preset, data_dir=args.data_dir, work_dir=args.work_dir, **common
        )
    for line in lines:
        if line["status"] != "rescored":
            print(f"  {line['record']}: {line['status']}")
    print(
        f"{sum(line['status'] == 'rescored' for line in lines)} of {len(lines)} records rescored; "
        f"rebuild the tables: bench leaderboard --suite {args.suite}"
    )
    return 0


def cmd_sweep(args) -> int:
    from pathlib import Path

    from bench.engine.config import parse_seeds
    from bench.tools.sweep import run_sweep

    seed = parse_seeds(args.seed, "bench sweep --seed")[0]
    kwargs = dict(
        method=args.method, dataset=args.dataset, params=_csv(args.params),
        suite_name=args.suite, preset_name=args.preset, trials=args.trials,
        storage=args.storage, study_name=args.study, seed=seed, metric=args.metric,
        grid=args.grid, values=_grid_values(args.values), prune=args.prune,
        data_dir=args.data_dir, results_dir=args.results_dir, work_dir=args.work_dir,
        allow_dirty=args.allow_dirty,
    )  # fmt: skip
    if args.executor == "slurm":
        from bench.tools.slurm import submit_sweep

        absolute = lambda p: str(Path(p).resolve()) if p else p  # noqa: E731
        kwargs.update(
            data_dir=absolute(args.data_dir), results_dir=absolute(args.results_dir),
            work_dir=absolute(args.work_dir),
            suite_name=absolute(args.suite) if Path(args.suite).is_file() else args.suite,
        )  # fmt: skip
        if not kwargs["storage"]:  # one study for every worker, safe on a shared file system
            name = (
                args.study
                or f"{args.method}-{args.dataset}-{args.preset}-{'-'.join(kwargs['params'])}"
            )
            kwargs["storage"] = f"journal://{kwargs['results_dir']}/sweeps/{name}.log"
        return submit_sweep(kwargs, args.workers, slurm_options(args), args.dry_run)
    out = run_sweep(**kwargs, worker=args.worker, progress=not args.no_progress)
    print(f"study {out['study']}: {out['complete']} complete of {out['trials']} trials")
    if "best" in out:
        print(
            f"best: trial {out['best']['number']}, {out['best']['params']} -> {out['best']['value']:.4f}"
        )
    for path in out["files"]:
        print(f"wrote {path}")
    return 0


def _grid_values(items: list[str] | None) -> dict[str, list[str]]:
    """--values np=2,10 --values k=4 -> {"np": ["2", "10"], "k": ["4"]} (checked by the space)."""
    out = {}
    for item in items or []:
        name, sep, vals = item.partition("=")
        if not sep or not vals:
            raise BenchError(f"--values takes NAME=V1,V2,... (got {item!r})")
        out[name.strip()] = _csv(vals)
    return out


def cmd_paper(args) -> int:
    from bench.tools.paper import write_paper

    print(
        f"wrote {write_paper(args.paper, args.table, args.results_dir, args.preset, args.out_dir)}"
    )
    return 0


def cmd_reproduce(args) -> int:
    from bench.tools.paper import reproduce

    pairs = reproduce(args.paper, args.results_dir, args.preset)
    if not pairs:
        print(
            f"{args.paper}: no number of ours to compare yet (run the suites, then `bench paper {args.paper}`)"
        )
        return 1
    width = max(len(p["method"]) for p in pairs)
    for p in pairs:
        print(
            f"Table {p['table']:<5} {p['paper_dataset'][:22]:<22} (ours {p['dataset']}) {p['method']:<{width}} {p['metric']:<9} "
            f"paper {p['paper']:<8g} ours {p['ours']:<8.4g} (n={p['n_seeds']}, tol {p['tolerance']:g}): {p['verdict']}"
        )
    same = [p for p in pairs if p["same_dataset"]]
    print(
        f"{sum(p['verdict'] == 'reproduces' for p in same)} of {len(same)} numbers on the paper's own datasets reproduce; "
        f"{len(pairs) - len(same)} compared on stand-in datasets (not reproductions)"
    )
    return 0


def cmd_plots(args) -> int:
    from bench.tools.plots import write_plots

    for path in write_plots(args.suite, args.results_dir, args.out_dir):
        print(f"wrote {path}")
    return 0


def cmd_site(args) -> int:
    import time
    from pathlib import Path

    from bench.tools.site import write_site

    t0 = time.perf_counter()
    page, *plots = write_site(args.results_dir, args.out, args.plots_dir)
    print(
        f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.0f} s) "
        f"and {len(plots) - 1} figures under {Path(args.plots_dir) if args.plots_dir else page.parent / 'plots'}/"
    )
    return 0


def cmd_list(args) -> int:
    from bench.api.registry import DATASETS, METHODS, METRICS, SUITES

    registry = {"methods": METHODS, "datasets": DATASETS, "metrics": METRICS, "suites": SUITES}[
        args.what
    ]
    entries = registry.entries()
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.description}")
    return 0


def cmd_fetch(args) -> int:
    from bench.data.load import load_bundle

    for name in args.datasets:
        bundle = load_bundle(name, data_dir=args.data_dir, download=True)
        for path, md5 in bundle.files.items():
            print(f"{name}: {path} (MD5 {md5})")
    return 0


def cmd_perf(args) -> int:
    import json

    from bench.api.perf_record import RandomInput
    from bench.tools.perf import run_perf, run_perf_suite, summary_line
    from bench.tools.perf_table import write_perf_table

    if args.suite:
        run_perf_suite(
            args.suite,
            args.preset,
            precisions=tuple(_csv(args.precisions)),
            methods=args.methods,
            dataset=args.dataset,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            train_steps=args.train_steps,
            repeats=args.repeats,
            cpu=args.cpu,
            results_dir=args.results_dir,
        )
    elif args.method:
        options = json.loads(args.options) if args.options else {}
        shape = RandomInput(
            image_size=args.image_size, channels=args.channels, classes=args.classes
        )
        record, path = run_perf(
            args.method,
            options=options,
            shape=shape,
            batch_size=args.batch_size,
            train_batch_size=args.train_batch_size,
            train_steps=args.train_steps,
            repeats=args.repeats,
            authors_pattern=args.authors_pattern,
            precision=args.precision,
            cpu=args.cpu,
            results_dir=args.results_dir,
        )
        print(
            f"{args.method} on {record.provenance.device} ({record.precision}, {record.pattern} pattern):"
        )
        print(f"  {summary_line(record)}; record {path}")
    elif not args.table:
        raise BenchError("bench perf: give --method NAME, --suite NAME --preset P, or --table")
    if args.suite or args.table:
        print(f"wrote {write_perf_table(args.results_dir, args.out_dir)}")
    return 0


def add_slurm_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help=f"slurm: submit {what} (submitit) and return",
    )
    p.add_argument("--max-parallel", type=_positive_int, default=8, help="slurm: tasks at once")
    p.add_argument("--partition", help="slurm: partition")
    p.add_argument("--account", help="slurm: account")
    p.add_argument("--qos", help="slurm: quality of service")
    p.add_argument("--gpus-per-unit", type=int, default=0, help="slurm: GPUs per task")
    p.add_argument("--cpus-per-unit", type=_positive_int, default=1, help="slurm: CPUs per task")
    p.add_argument("--mem-per-unit", help="slurm: memory per task, e.g. 16G")
    p.add_argument(
        "--time-per-unit",
        type=_positive_int,
        default=120,
        help="slurm: minutes per task (a longer one is requeued and resumes)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="slurm: print the plan and the sbatch script only"
    )


def slurm_options(args):
    from bench.tools.slurm import SlurmOptions

    return SlurmOptions(
        partition=args.partition, account=args.account, qos=args.qos, gpus=args.gpus_per_unit,
        cpus=args.cpus_per_unit, mem=args.mem_per_unit, time_min=args.time_per_unit,
        max_parallel=args.max_parallel,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench", description="Benchmark harness for diffusion-based medical image analysis."
    )
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="load methods, datasets or tasks from outside the repository: a module name "
        "or a .py file (repeatable; installed packages' `bench.plugins` entry points load "
        "without it)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run (or resume) a suite: datasets x methods x seeds")
    r.add_argument("--suite", required=True, help="suite name (bench list suites) or a YAML path")
    r.add_argument(
        "--preset", default="smoke", help="budget preset of the suite (smoke, full, ...)"
    )
    r.add_argument("--datasets", type=_csv, help="only these datasets (comma-separated)")
    r.add_argument(
        "--methods", type=_csv, help="only these methods (comma-separated); any registered name"
    )
    r.add_argument("--seeds", type=_csv, help="seeds (default: the suite's)")
    r.add_argument(
        "--data-dir",
        help="where data files are looked for first (then $BENCH_DATA_DIR, then the cache)",
    )
    r.add_argument("--results-dir", default="results")
    r.add_argument("--work-dir", default="runs", help="checkpoints and scratch (not records)")
    r.add_argument(
        "--download", action="store_true", help="download missing data files (MD5-verified)"
    )
    r.add_argument(
        "--fallback-synthetic",
        action="store_true",
        help="run on the built-in SYNTHETIC datasets when real data is missing",
    )
    r.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast on GPUs and on CPUs with native bf16 (AVX-512 BF16, AMX), else fp32",
    )
    r.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        help="run the units in N processes at once on this machine (the cores divided between them)",
    )
    add_slurm_options(r, "the pending units as one SLURM job array")
    r.add_argument("--cpu", action="store_true", help="force CPU even when a GPU is present")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument(
        "--checkpoint-every",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="checkpoint training at most this often (in --work-dir) so that a killed run resumes mid-unit",
    )
    r.add_argument(
        "--rerun",
        action="store_true",
        help="run the selected units again even when complete (e.g. after a code change); the new record says what it replaced",
    )
    r.add_argument(
        "--allow-dirty",
        action="store_true",
        help="let uncommitted code write into the published results/ (flagged in the leaderboard)",
    )
    r.set_defaults(func=cmd_run)

    st = sub.add_parser(
        "status",
        help="where a suite run stands: each unit complete, running, failed or pending (reads only)",
    )
    st.add_argument("--suite", required=True)
    st.add_argument("--preset", default="smoke")
    st.add_argument("--datasets", type=_csv)
    st.add_argument("--methods", type=_csv)
    st.add_argument("--seeds", type=_csv)
    st.add_argument("--data-dir")
    st.add_argument("--results-dir", default="results")
    st.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto", help="as the run's"
    )
    st.add_argument("--cpu", action="store_true")
    st.add_argument("--work-dir", default="runs", help="where SLURM plans were written")
    st.set_defaults(func=cmd_status)

    lb = sub.add_parser("leaderboard", help="rebuild leaderboards/<suite>.md and .csv from records")
    lb.add_argument("--suite", required=True)
    lb.add_argument("--results-dir", default="results")
    lb.add_argument("--out-dir", default="leaderboards")
    lb.add_argument(
        "--reference", help="reference method of the paired tests (default: the suite's)"
    )
    lb.add_argument(
        "--test", choices=("ttest", "wilcoxon"), default="ttest", help="paired test over seeds"
    )
    lb.set_defaults(func=cmd_leaderboard)

    si = sub.add_parser(
        "site", help="one self-contained HTML page of every leaderboard (sortable, filterable)"
    )
    si.add_argument("--results-dir", default="results")
    si.add_argument("--out", default="leaderboards/index.html")
    si.add_argument("--plots-dir", help="where its figures go (default: plots/ beside the page)")
    si.set_defaults(func=cmd_site)

    rs = sub.add_parser(
        "rescore",
        help="score stored outputs again: a generation suite's samples under the extractor it "
        "builds now; a classification suite's predictions calibrated (temperature fitted on val)",
    )
    rs.add_argument("--suite", required=True)
    rs.add_argument("--preset", help="only this preset (required for a generation suite)")
    rs.add_argument("--datasets", type=_csv, help="only these datasets (comma-separated)")
    rs.add_argument("--data-dir")
    rs.add_argument("--results-dir", default="results")
    rs.add_argument("--work-dir", default="runs", help="the extractor cache (runs/cache)")
    rs.add_argument(
        "--force",
        action="store_true",
        help="also records already scored by that extractor (calibrated at this version)",
    )
    rs.set_defaults(func=cmd_rescore)

    sw = sub.add_parser(
        "sweep", help="Optuna study over a method's declared search space (validation objective)"
    )
    sw.add_argument("method")
    sw.add_argument("--dataset", required=True)
    sw.add_argument(
        "--params", required=True, help="declared parameters, comma-separated (e.g. np,k,h)"
    )
    sw.add_argument(
        "--trials", type=int, help="total trials of the study (default: the grid size, or 20)"
    )
    sw.add_argument(
        "--storage",
        help="Optuna storage: an RDB URL or journal:///path/study.log (default: sqlite in "
        "results/sweeps/; with --executor slurm a journal file there)",
    )
    sw.add_argument(
        "--study",
        help="study name (default: method-dataset-preset-params, then -seedN from seed 1)",
    )
    sw.add_argument("--suite", default="classification")
    sw.add_argument("--preset", default="smoke")
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument(
        "--metric",
        help="validation metric to optimise (classification default: auroc; generation: fid of samples for the validation labels)",
    )
    sw.add_argument(
        "--grid", action="store_true", help="every combination of the parameters' choices"
    )
    sw.add_argument(
        "--values",
        action="append",
        metavar="NAME=V1,V2",
        help="with --grid: only these declared values of a parameter (repeatable)",
    )
    sw.add_argument(
        "--prune",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="median pruning on intermediate validation scores (default: on, off for --grid)",
    )
    sw.add_argument(
        "--worker",
        type=int,
        default=0,
        help="number of this worker when several share --storage (0, 1, ...)",
    )
    sw.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        help="slurm: sweep workers (array tasks) sharing the study",
    )
    add_slurm_options(sw, "--workers sweep workers as one SLURM job array sharing the study")
    sw.add_argument("--data-dir")
    sw.add_argument("--results-dir", default="results")
    sw.add_argument("--work-dir", default="runs")
    sw.add_argument("--no-progress", action="store_true")
    sw.add_argument(
        "--allow-dirty",
        action="store_true",
        help="let uncommitted code write into the published results/",
    )
    sw.set_defaults(func=cmd_sweep)

    pp = sub.add_parser(
        "paper",
        help="regenerate a paper's tables from our records, the paper's numbers beside ours",
    )
    pp.add_argument("paper", help="diffmic-v2, dcube, odm or survey")
    pp.add_argument("--table", help="one table id (e.g. IV)")
    pp.add_argument(
        "--preset",
        help="records of this preset (default, per dataset: the preset with the most records)",
    )
    pp.add_argument("--results-dir", default="results")
    pp.add_argument("--out-dir", default="leaderboards")
    pp.set_defaults(func=cmd_paper)

    rp = sub.add_parser(
        "reproduce", help="compare our numbers with a paper's, within stated tolerances"
    )
    rp.add_argument("paper")
    rp.add_argument("--preset")
    rp.add_argument("--results-dir", default="results")
    rp.set_defaults(func=cmd_reproduce)

    pl = sub.add_parser(
        "plots", help="ROC curves, confusion matrices, training curves, t-SNE of denoised labels"
    )
    pl.add_argument("--suite", default="classification")
    pl.add_argument("--results-dir", default="results")
    pl.add_argument("--out-dir", default="leaderboards/plots")
    pl.set_defaults(func=cmd_plots)

    ls = sub.add_parser("list", help="list registered methods, datasets, metrics or suites")
    ls.add_argument("what", choices=("methods", "datasets", "metrics", "suites"))
    ls.set_defaults(func=cmd_list)

    pf = sub.add_parser(
        "perf",
        help="training / inference throughput, FLOPs and memory of methods (random weights and images)",
    )
    pf.add_argument("--method", help="one registered method")
    pf.add_argument(
        "--suite",
        help="every method of a suite, at --preset's options and batch size; writes leaderboards/perf.md",
    )
    pf.add_argument("--preset", default="full", help="with --suite (default: full)")
    pf.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="with --suite: the precisions to measure each method in",
    )
    pf.add_argument("--methods", type=_csv, help="with --suite: only these methods")
    pf.add_argument(
        "--dataset",
        help="with --suite: the dataset whose shape the random images take (default: the suite's first)",
    )
    pf.add_argument("--data-dir")
    pf.add_argument(
        "--table",
        action="store_true",
        help="rebuild leaderboards/perf.md from the records (measures nothing by itself)",
    )
    pf.add_argument("--out-dir", default="leaderboards")
    pf.add_argument(
        "--options",
        help="with --method: options as JSON, e.g. '{\"latent_dim\": 1024}' (default: the paper's)",
    )
    pf.add_argument("--image-size", type=int, default=224)
    pf.add_argument("--channels", type=int, default=3)
    pf.add_argument("--classes", type=int, default=5)
    pf.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="inference batch size (batch 1 is always measured too)",
    )
    pf.add_argument(
        "--train-batch-size", type=int, default=64, help="with --method (a suite uses its preset's)"
    )
    pf.add_argument("--train-steps", type=int, default=3, help="timed steps per training stage")
    pf.add_argument("--repeats", type=int, default=2, help="timed inference calls")
    pf.add_argument(
        "--authors-pattern",
        action="store_true",
        help="run with the method's AUTHORS_PATTERN options, fp32 (the reference code)",
    )
    pf.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    pf.add_argument("--cpu", action="store_true")
    pf.add_argument("--results-dir", default="results")
    pf.set_defaults(func=cmd_perf)

    f = sub.add_parser("fetch", help="download dataset files into the cache (needs internet)")
    f.add_argument("datasets", nargs="+")
    f.add_argument("--data-dir")
    f.set_defaults(func=cmd_fetch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("once")
    from bench.train.device import configure_threads
    from bench.train.interrupt import Terminated, handle_sigterm

    configure_threads()
    handle_sigterm()
    try:
        add_plugins(args.plugin)
        return args.func(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(
            "bench: terminated (SIGTERM); complete units are kept and a rerun resumes",
            file=sys.stderr,
        )
        return 143
    except KeyboardInterrupt:
        print("bench: interrupted; complete units are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
