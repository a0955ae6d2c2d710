"""`bench site`: the leaderboards as one self-contained HTML page (data, styles, script
and figures inline; the page requests nothing from any network), rebuilt from the records
only, through the same aggregation and cells as the markdown leaderboards
(bench/tools/board.py).

One page per suite (sections per preset and dataset: the verdict, a sortable table whose
method rows open to their details, the figures), the paper tables, ``perf.md`` and the
sweeps as pages of the same file, filters for dataset, preset and precision, and a footer
saying how it was made. The figures are also written to ``leaderboards/plots/``. The page
depends only on the records (no clock), so the same records give the same bytes."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
from markupsafe import Markup, escape

from bench.api.errors import BenchError
from bench.tools.board import Board, TableCells, load_board, sections
from bench.tools.mdhtml import to_html
from bench.tools.site_rows import Figures, data_uri, shown, table_view

SUITES = ("classification", "generation", "restoration")
TEMPLATES = Path(__file__).parent / "templates"
#: the list of the figures the last `bench site` wrote under plots/ (its stale ones are removed)
MANIFEST = "site-figures.txt"


def environment():
    """Jinja2 with autoescaping on: every name from a record or a suite is escaped."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def board_markdown(board: Board) -> str:
    from bench.tools.leaderboard import render_markdown

    return render_markdown(board)


def suite_page(board: Board, figs: Figures) -> dict:
    """A suite's page: its header (what, where, when, code, statistics), then one section
    per (preset, dataset), then the task's own sections."""
    text = board_markdown(board)
    header = text.split("\n## ")[0].splitlines()[1:]  # the page has its own title
    views = []
    for section in sections(board):
        blocks, n = [], 0
        for block in section.blocks:
            if isinstance(block, TableCells):
                blocks.append({"table": table_view(board, figs, section, block, n)})
                n += 1
            else:
                lines = [ln for ln in block if not ln.startswith("## ")]
                if any(ln.strip() for ln in lines):
                    blocks.append({"html": to_html(lines, shift=1)})
        views.append(
            {
                "id": f"{board.suite.name}-{section.preset}-{section.dataset}",
                "preset": section.preset,
                "dataset": section.dataset,
                "title": f"{section.dataset} ({section.preset})"
                + (" — SYNTHETIC" if section.synthetic else ""),
                "blocks": blocks,
            }
        )
    tail = board.task.leaderboard_sections(board.summary, board.reference)
    return {
        "id": board.suite.name,
        "title": board.suite.name,
        "intro": to_html(header),
        "sections": views,
        "tail": to_html(tail, shift=1) if tail else "",
    }


def images_in(folder: Path) -> dict[str, str]:
    return {p.name: data_uri(p.read_bytes(), "png") for p in sorted(folder.glob("*.png"))}


def paper_pages(results_dir: Path, figs: Figures) -> list[dict]:
    """Each paper's tables (`bench paper KEY`), with its figures."""
    from bench.tools.paper import build_paper, paper_keys

    pages = []
    for key in sorted(paper_keys()):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                text, _ = build_paper(key, None, shown(results_dir), None, Path(tmp))
            except BenchError as exc:
                text = f"# {key}\n\n_Not built: {exc}_"
            images = images_in(Path(tmp))
            for name, path in sorted((p.name, p) for p in Path(tmp).glob("*.png")):
                figs.files[f"papers/{name}"] = path.read_bytes()
        pages.append(
            {"id": f"paper-{key}", "title": f"paper: {key}", "html": to_html(text, images, 1)}
        )
    return pages


def perf_page(results_dir: Path) -> list[dict]:
    from bench.tools.perf_table import load_perf_records, render_perf

    if not load_perf_records(results_dir):
        return []
    return [{"id": "perf", "title": "perf", "html": to_html(render_perf(results_dir), shift=1)}]


def sweep_page(results_dir: Path, figs: Figures) -> list[dict]:
    """The sweep curves (each swept parameter's test metrics, the floors drawn), then the
    sweeps' own pages (`bench sweep`) with their plots."""
    folder = results_dir / "sweeps"
    studies = sorted(folder.glob("*.md")) if folder.is_dir() else []
    if not studies:
        return []
    curves = "".join(
        f'<figure><img alt="{escape(f["title"])}" src="{f["src"]}">'
        f"<figcaption>{escape(f['title'])}</figcaption></figure>"
        for f in sweep_curves(results_dir, figs)
    )
    images = images_in(folder)
    html = "\n".join(str(to_html(p.read_text(), images, 1)) for p in studies)
    return [
        {
            "id": "sweeps",
            "title": "sweeps",
            "html": Markup(f'<h2>Sweeps</h2><div class="figures">{curves}</div>\n{html}'),
        }
    ]


def sweep_curves(results_dir: Path, figs: Figures) -> list[dict]:
    """Per (method, dataset, swept config field): the mean test metrics over the trials of
    each value, in the studies that varied it alone (`bench paper`'s grouping), with the
    floors of the split."""
    from bench.api.registry import METHODS, TASKS
    from bench.engine.records import load_records, read_record
    from bench.report.floors import metric_floors
    from bench.tools.figures import sweep_figure
    from bench.tools.paper import one_factor_groups

    paths = sorted((results_dir / "sweeps").rglob("seed*.json"))
    trials = [r for r in (read_record(p)[0] for p in paths) if r and r.ok]
    out = []
    for method, dataset in sorted({(r.method, r.dataset) for r in trials}):
        recs = [r for r in trials if (r.method, r.dataset) == (method, dataset)]
        task = TASKS.get(METHODS.get(method).cls.task) if method in METHODS.names() else None
        if task is None:
            continue
        suite_records = [
            r
            for s in SUITES
            for r in load_records(results_dir, s)
            if (r.method, r.dataset) == (method, dataset)
        ]
        fields = sorted(
            {f for r in recs for f in r.config if len({str(x.config.get(f)) for x in recs}) > 1}
        )
        metrics = list(task.key_metrics)  # what the task's tables lead with
        for field in fields:
            groups = one_factor_groups(recs, field, suite_records)
            values = [v for v in groups if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(values) < 2:
                continue
            points = {
                m: {
                    v: float(np.mean(got))
                    for v in values
                    if (got := [x for r in groups[v] if (x := r.metric("test", m)) is not None])
                }
                for m in metrics
            }
            used = [r for v in values for r in groups[v]]
            floors = metric_floors(task.split_floors(used), task.floored_metrics)
            title = f"{method} on {dataset}: {field} (test, mean over trials)"
            data = sweep_figure(points, floors, field, title)
            out.append(figs.add(f"sweeps/{method}-{dataset}-{field}", data, "svg", title))
    return [f for f in out if f]


def footer(boards: list[Board], results_dir: Path) -> dict:
    records = [r for b in boards for r in b.records]
    commits = sorted({(r.provenance.git_commit or "unknown")[:10] for r in records})
    return {
        "command": f"bench site --results-dir {shown(results_dir)}",
        "records": len(records),
        "suites": ", ".join(b.suite.name for b in boards),
        "commits": ", ".join(commits),
        "finished": max((r.provenance.finished for r in records), default=""),
    }


def build_site(results_dir="results") -> tuple[str, dict[str, bytes]]:
    """The page's HTML and its figures ({relative file name: bytes})."""
    results_dir = Path(results_dir)
    boards = []
    for name in SUITES:
        try:
            boards.append(load_board(name, results_dir))
        except BenchError as exc:
            if "no complete records" not in str(exc):
                raise
    if not boards:
        raise BenchError(f"no complete records under {results_dir}/ (run `bench run` first)")
    figs = Figures()
    pages = [suite_page(b, figs) for b in boards]
    pages += paper_pages(results_dir, figs)
    pages += perf_page(results_dir) + sweep_page(results_dir, figs)
    sections_ = [s for p in pages for s in p.get("sections", [])]
    precisions = sorted({r.precision for b in boards for r in b.records})
    html = (
        environment()
        .get_template("site.html.j2")
        .render(
            pages=pages,
            datasets=sorted({s["dataset"] for s in sections_}),
            presets=sorted({s["preset"] for s in sections_}),
            precisions=precisions,
            footer=footer(boards, results_dir),
            css=(TEMPLATES / "site.css").read_text(),
            script=(TEMPLATES / "site.js").read_text(),
        )
    )
    return html, figs.files


def write_site(results_dir="results", out="leaderboards/index.html", plots_dir=None) -> list[Path]:
    """Write the page, and its figures under `plots_dir` (default: plots/ beside the page)."""
    html, files = build_site(results_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    written = [out]
    plots = Path(plots_dir) if plots_dir else out.parent / "plots"
    names = sorted(safe_path(name).as_posix() for name in files)
    manifest = plots / MANIFEST
    if manifest.is_file():  # what the last build wrote and this one does not: stale, removed
        for old in set(manifest.read_text().split()) - set(names):
            if ".." not in old:
                (plots / old).unlink(missing_ok=True)
    for name, data in sorted(files.items()):
        path = plots / safe_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    plots.mkdir(parents=True, exist_ok=True)
    manifest.write_text("".join(f"{n}\n" for n in names))
    return written + [manifest]


def safe_path(name: str) -> Path:
    """A figure's name as a relative path without anything but plain characters."""
    parts = [re.sub(r"[^A-Za-z0-9._+-]+", "_", p) for p in name.split("/") if p not in ("", "..")]
    return Path(*parts)
