"""Helpers of the site's tests: the page's leaderboard tables read with Python's HTML
parser, the markdown leaderboards' tables read as text, both as (text, emphasis) cells,
and a results folder with a method named like a script."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

EVIL = "<script>alert(1)</script>"


class Page(HTMLParser):
    """The page's leaderboard tables (`table.board-table`): per table, its header and rows
    of (text, emphasis) cells, emphasis "b" (bold), "u" (underlined), "i" (italic) or "";
    plus every img src, script src, link href and element id."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self.srcs: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.ids: list[str] = []
        self.scripts: list[str] = []
        self._table = self._row = self._cell = None
        self._depth = 0  # nested tables (the details' mini tables) are not the board's
        self._marks: list[str] = []
        self._tr_class = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "img":
            self.srcs.append(a.get("src") or "")
        if tag == "script":
            self.scripts.append(a.get("src") or "")
        if tag == "link":
            self.links.append((a.get("rel") or "", a.get("href") or ""))
        if tag == "table":
            if self._table is not None:
                self._depth += 1
            elif "board-table" in (a.get("class") or ""):
                self._table = {"header": [], "rows": []}
            return
        if self._table is None or self._depth:
            return
        if tag == "tr":
            self._tr_class = a.get("class") or ""
            self._row = (
                [] if ("row" in self._tr_class.split() or "floor" in self._tr_class) else None
            )
            if self._tr_class == "" and not self._table["header"]:
                self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell, self._marks = [], []
        elif tag in ("strong", "u", "em") and self._cell is not None:
            self._marks.append({"strong": "b", "u": "u", "em": "i"}[tag])

    def handle_endtag(self, tag):
        if tag == "table" and self._table is not None:
            if self._depth:
                self._depth -= 1
            else:
                self.tables.append(self._table)
                self._table = None
            return
        if self._table is None or self._depth:
            return
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            text = "".join(self._cell).strip()
            mark = next((m for m in ("b", "u") if m in self._marks), "")
            self._row.append((text, mark))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if not self._table["header"] and not self._tr_class:
                self._table["header"] = [t for t, _ in self._row]
            else:
                self._table["rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def md_cell(text: str) -> tuple[str, str]:
    """A markdown leaderboard cell as (text, emphasis); a significance mark's escaped
    asterisks (`**0.8**\\*\\*`) as the page shows them (`0.8**`)."""
    text, marks = re.fullmatch(r"(.*?)((?:\\\*)*)", text.strip()).groups()
    marks = marks.replace("\\", "")
    for pattern, emphasis in ((r"\*\*(.+?)\*\*", "b"), (r"<u>(.+?)</u>", "u"), (r"_(.+)_", "")):
        m = re.fullmatch(pattern, text)
        if m:
            return m.group(1) + marks, emphasis
    return text + marks, ""


def md_tables(text: str) -> list[dict]:
    """The leaderboard tables (`| method | seeds | <registered metrics>`) of a markdown
    leaderboard (not its other tables, such as generation's ordinal consistency)."""
    from bench.api.registry import METRICS

    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.startswith("| method | seeds |"):
            continue
        header = [c.strip() for c in line.strip().strip("|").split("|")]
        if not all(m in METRICS.names() for m in header[2:]):
            continue
        rows, j = [], i + 2
        while j < len(lines) and lines[j].startswith("|"):
            rows.append([md_cell(c) for c in lines[j].strip().strip("|").split("|")])
            j += 1
        out.append({"header": header, "rows": rows})
    return out


def evil_results(src: Path, dst: Path) -> Path:
    """A copy of two committed BreastMNIST methods' records (standard preset), one of them
    renamed to a method called like a script: what a user's suite could name a method."""
    base = src / "classification" / "breastmnist"
    for method, name in (("resnet50", "resnet50"), ("card", EVIL)):
        folder = next(p for p in sorted((base / method).iterdir()) if p.is_dir())
        out = (
            dst
            / "classification"
            / "breastmnist"
            / ("evil" if name == EVIL else method)
            / folder.name
        )
        out.mkdir(parents=True)
        for f in sorted(folder.iterdir()):
            if f.suffix == ".json":
                f_text = f.read_text().replace(
                    f'"method": "{method}"', f'"method": "{_json(name)}"'
                )
                (out / f.name).write_text(f_text)
            elif f.suffix == ".npz":
                shutil.copy(f, out / f.name)
    return dst


def _json(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')
