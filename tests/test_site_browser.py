"""The committed site in a real browser: Playwright driving Debian's chromium (installed by
.ci/run with apt; no browser build is downloaded). The page loads with no console error
and no request, a column header sorts its table both ways (as numbers), a method row
opens its details, a figure is visible, the dataset filter hides the other tables, and a
method named like a script is text (no dialog). Skips, saying so, only where chromium
(or Playwright) is absent."""

import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from site_pages import EVIL, evil_results


def chromium_path() -> str | None:
    for name in (os.environ.get("BENCH_CHROMIUM"), "chromium", "chromium-browser"):
        found = name and (shutil.which(name) or (Path(name).is_file() and name))
        if found:
            return str(found)
    return None


CHROMIUM = chromium_path()
try:
    import playwright.sync_api  # noqa: F401

    PLAYWRIGHT = True
except ImportError:
    PLAYWRIGHT = False

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)",
    ),
    pytest.mark.skipif(not PLAYWRIGHT, reason="playwright is not installed (the test extra)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Loaded:
    """A page with its console errors, uncaught errors, requests and dialogs."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors, self.requests, self.dialogs = [], [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_load_state("load")

    def outside(self) -> list[str]:
        """Requests other than the page itself and its inline (data:) figures."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]


@pytest.fixture
def site(browser, site_page):
    loaded = Loaded(browser, site_page)
    yield loaded
    loaded.page.close()


def column_values(table, col: int) -> list[float]:
    texts = table.locator("tbody.rows > tr.row").evaluate_all(
        f"rows => rows.map(r => r.children[{col}].textContent)"
    )
    import re

    out = []
    for t in texts:
        m = re.search(r"[-+]?\d*\.?\d+", t)
        out.append(float(m.group()) if m else float("nan"))
    return [v for v in out if v == v]


def test_the_page_loads_without_errors_or_requests(site):
    assert site.page.title() == "diffmed-bench leaderboards"
    assert site.errors == []
    assert site.outside() == []
    assert site.page.locator("#page-classification").is_visible()


def test_a_column_header_sorts_its_table_both_ways(site):
    table = site.page.locator("#classification-standard-retinamnist-0 table.board-table")
    header = table.locator("thead th", has_text="auroc").first
    col = header.evaluate("th => Array.prototype.indexOf.call(th.parentNode.children, th)")
    before = column_values(table, col)
    assert len(before) > 5 and before != sorted(before)
    header.click()
    up = column_values(table, col)
    assert up == sorted(up) and sorted(up) == sorted(before)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    down = column_values(table, col)
    assert down == sorted(up, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    # the floors stay at the end, under their own body
    assert table.locator("tbody.floors tr").count() >= 2
    assert site.errors == []


def test_a_method_row_opens_its_details_and_figures_show(site, tmp_path):
    block = site.page.locator("#classification-standard-retinamnist-0")
    row = block.locator("tbody.rows > tr.row").first
    details = block.locator("tbody.rows > tr.details").first
    assert not details.is_visible()
    row.click()
    assert details.is_visible()
    assert row.get_attribute("aria-expanded") == "true"
    assert details.get_by_text("Records and provenance").is_visible()
    assert details.locator(
        "code", has_text="results/classification/retinamnist/"
    ).first.is_visible()
    figure = block.locator(".figures img").first
    figure.scroll_into_view_if_needed()
    assert figure.is_visible()
    assert figure.evaluate("img => img.complete && img.naturalWidth > 100")
    detail_figure = details.locator("img").first
    assert detail_figure.evaluate("img => img.complete && img.naturalWidth > 100")
    shot = tmp_path / "site.png"
    row.scroll_into_view_if_needed()
    site.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("BENCH_SITE_SCREENSHOTS"):  # to look at them
        out = Path(os.environ["BENCH_SITE_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "site-details.png")
    row.click()
    assert not details.is_visible()
    assert site.errors == []


def test_the_dataset_filter_hides_the_other_tables(site):
    boards = site.page.locator("#page-classification section.board")
    n = boards.count()
    assert n >= 3
    site.page.select_option("#f-dataset", "retinamnist")
    visible = [
        boards.nth(i).get_attribute("data-dataset") for i in range(n) if boards.nth(i).is_visible()
    ]
    assert visible and set(visible) == {"retinamnist"}
    assert site.page.locator("#classification-standard-breastmnist-0 table.board-table").is_hidden()
    site.page.select_option("#f-dataset", "")
    assert site.page.locator(
        "#classification-standard-breastmnist-0 table.board-table"
    ).is_visible()
    site.page.select_option("#f-precision", "bf16")
    rows = site.page.locator("#classification-full-breastmnist-0 tbody.rows > tr.row")
    shown = [rows.nth(i).inner_text() for i in range(rows.count()) if rows.nth(i).is_visible()]
    assert shown and all("bf16" in t for t in shown)
    assert site.errors == []


def test_the_other_pages_open(site):
    for page_id in ("generation", "restoration", "perf", "sweeps", "paper-diffmic-v2"):
        site.page.click(f"nav .tab[data-page='{page_id}']")
        assert site.page.locator(f"#page-{page_id}").is_visible()
        assert site.page.locator("#page-classification").is_hidden()
    site.page.click("nav .tab[data-page='generation']")
    grid = site.page.locator("#page-generation tr.row").first
    grid.click()
    assert site.page.locator("#page-generation tr.details img").first.is_visible()
    assert site.errors == [] and site.outside() == []


def test_a_method_named_like_a_script_is_text_in_the_browser(browser, tmp_path, monkeypatch):
    from bench.tools.site import write_site

    monkeypatch.chdir(tmp_path)
    results = evil_results(REPO / "results", tmp_path / "results")
    (path,) = write_site(results, tmp_path / "index.html", tmp_path / "plots")[:1]
    loaded = Loaded(browser, path)
    try:
        labels = loaded.page.locator("tr.row > td:first-child").all_inner_texts()
        assert any(EVIL in t for t in labels)
        assert loaded.dialogs == [] and loaded.errors == [] and loaded.outside() == []
    finally:
        loaded.page.close()
