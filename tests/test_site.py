"""`bench site`: the committed page read with Python's HTML parser (runs everywhere; the
browser tests are tests/test_site_browser.py). Its leaderboard tables hold exactly the
markdown leaderboards' cells (one source of numbers), it requests nothing, and a method
named like a script shows as text."""

import re

import pytest
from conftest import REPO
from site_pages import EVIL, Page, evil_results, md_tables

from bench.tools.leaderboard import write_leaderboard
from bench.tools.site import build_site, write_site

SUITES = ("classification", "generation", "restoration")


@pytest.fixture(scope="module")
def page(site_page):
    return Page(site_page.read_text())


def test_every_cell_of_the_page_is_the_markdowns(page):
    """Table by table, row by row: the same text and the same bold / underline (the
    committed markdown and page are what the code makes: tests/test_committed_tables.py)."""
    md = [t for s in SUITES for t in md_tables((REPO / "leaderboards" / f"{s}.md").read_text())]
    assert len(page.tables) == len(md) > 10
    for html_table, md_table in zip(page.tables, md):
        assert html_table["header"] == md_table["header"]
        assert html_table["rows"] == md_table["rows"], md_table["header"]


def test_the_page_is_self_contained(page, site_page):
    text = site_page.read_text()
    assert page.srcs and all(s.startswith("data:image/") for s in page.srcs)
    assert page.scripts == [""]  # one inline script, no src
    assert all(href.startswith("data:") for _, href in page.links)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "@import" not in text and "url(http" not in text
    for suite in SUITES:
        assert f"page-{suite}" in page.ids
    for page_id in ("page-perf", "page-sweeps", "page-paper-diffmic-v2"):
        assert page_id in page.ids
    assert len(page.ids) == len(set(page.ids)), "duplicate element ids"


def test_the_page_has_its_figures(page, site_page):
    text = site_page.read_text()
    for caption in ("ROC: ", "forest plot of the verdict: ", "samples: ", "restoration strip: "):
        assert caption in text, caption
    plots = REPO / "leaderboards" / "plots"
    for name in (
        "classification/standard-retinamnist-roc.svg",
        "classification/standard-retinamnist-forest.svg",
    ):
        assert (plots / name).is_file(), name


def test_a_method_named_like_a_script_shows_as_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = evil_results(REPO / "results", tmp_path / "results")
    html, _ = build_site(results)
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # the page's own
    page = Page(html)
    labels = [row[0][0] for t in page.tables for row in t["rows"]]
    assert any(label.startswith(EVIL) for label in labels)
    # and the same cells as its markdown leaderboard
    md = md_tables(write_leaderboard("classification", results, tmp_path / "lb")[0].read_text())
    assert [t["rows"] for t in page.tables] == [t["rows"] for t in md]


def test_write_site_writes_the_page_and_its_plots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = evil_results(REPO / "results", tmp_path / "results")
    written = write_site(results, tmp_path / "out" / "index.html")
    assert written[0] == tmp_path / "out" / "index.html"
    names = [p.relative_to(tmp_path / "out" / "plots").as_posix() for p in written[1:]]
    assert "classification/standard-breastmnist-roc.svg" in names
    assert all(".." not in n and "<" not in n for n in names)
    assert (
        b"<svg"
        in (
            tmp_path / "out" / "plots" / "classification" / "standard-breastmnist-roc.svg"
        ).read_bytes()
    )


def test_a_figure_the_last_build_wrote_and_this_one_does_not_is_removed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = evil_results(REPO / "results", tmp_path / "results")
    plots = tmp_path / "plots"
    write_site(results, tmp_path / "index.html", plots)
    stale, own = plots / "classification" / "gone.svg", plots / "classification" / "mine.png"
    stale.write_text("<svg/>")
    own.write_text("not the site's")
    with (plots / "site-figures.txt").open("a") as f:
        f.write("classification/gone.svg\n")
    write_site(results, tmp_path / "index.html", plots)
    assert not stale.exists() and own.exists()
    assert "gone.svg" not in (plots / "site-figures.txt").read_text()


def test_a_folder_of_no_registered_suite_is_named_in_the_footer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = evil_results(REPO / "results", tmp_path / "results")
    (results / "my_suite" / "breastmnist").mkdir(parents=True)
    html, _ = build_site(results)
    assert "Not shown: my_suite (unknown suite" in html
    assert 'id="page-classification"' in html and 'id="page-my_suite"' not in html


def test_a_resumed_units_wall_time_is_shown_as_its_last_leg():
    from bench.engine.records import read_record
    from bench.tools.site_rows import provenance

    record = read_record(next((REPO / "results" / "classification").rglob("seed*.json")))[0]
    record.timings.wall_s = 491.2
    record.selection.other.pop("resumed_after_epoch", None)
    assert provenance(record)["wall"] == "491 s"
    record.selection.other["resumed_after_epoch"] = 13
    assert provenance(record)["wall"] == "491 s (its last leg: resumed after epoch 13)"
