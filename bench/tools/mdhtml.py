"""The little markdown the harness writes (headings, paragraphs, lists, tables, images,
`code`, **bold**, _italics_, <u>underline</u>, links, `\\*` and `\\_` escapes) as HTML, for the site.

Everything is escaped first, then only that markup is turned into tags: a method or
dataset name in a table (`<script>`) stays text. Images are looked up beside the
markdown (`images`: name -> data URI); one that is not there is its alt text."""

from __future__ import annotations

import html
import re

from markupsafe import Markup

CODE = re.compile(r"`([^`]+)`")
BOLD = re.compile(r"(?<!\*)\*\*(?![\s*])(.+?)(?<![\s*])\*\*")
ITALIC = re.compile(r"(?<![\w\\])_(?![\s_])(.+?)(?<![\s_])_(?!\w)")
UNDERLINE = re.compile(r"&lt;u&gt;(.*?)&lt;/u&gt;")
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
ESCAPED = re.compile(r"\\([*_])")  # a significance mark's asterisks after a bold cell
LINK = re.compile(r"\[([^\]]+)\]\(((?:https?://|#)[^)\s]+)\)")


def inline(text: str, images: dict[str, str] | None = None) -> Markup:
    """One line (or cell) of markdown as HTML."""
    text = html.escape(text, quote=True)
    codes: list[str] = []

    def keep(m):  # code spans are not formatted further
        codes.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = CODE.sub(keep, text)

    def image(m):
        src = (images or {}).get(html.unescape(m.group(2)))
        alt = m.group(1)
        return f'<img alt="{alt}" src="{src}">' if src else f"[{alt}: {m.group(2)}]"

    text = IMAGE.sub(image, text)
    text = LINK.sub(r'<a href="\2">\1</a>', text)
    text = BOLD.sub(r"<strong>\1</strong>", text)
    text = ITALIC.sub(r"<em>\1</em>", text)
    text = UNDERLINE.sub(r"<u>\1</u>", text)
    text = ESCAPED.sub(r"\1", text)
    text = re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)
    return Markup(text)


def cells(line: str) -> list[str]:
    """The cells of a markdown table row."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def is_rule(line: str) -> bool:
    return bool(re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*", line.strip()))


def table_html(lines: list[str], images=None) -> str:
    head, body = cells(lines[0]), [cells(r) for r in lines[2:]]
    out = ['<div class="scroll"><table class="sortable md"><thead><tr>']
    out += [f'<th data-col="{i}">{inline(c, images)}</th>' for i, c in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for r in body:
        out.append("<tr>" + "".join(f"<td>{inline(c, images)}</td>" for c in r) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def to_html(text: str | list[str], images: dict[str, str] | None = None, shift: int = 0) -> Markup:
    """Markdown (a string or its lines) as HTML; headings moved down `shift` levels."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if heading:
            level = min(6, len(heading.group(1)) + shift)
            out.append(f"<h{level}>{inline(heading.group(2), images)}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and is_rule(lines[i + 1]):
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append(table_html(lines[i:j], images))
            i = j
        elif re.match(r"\s*[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                item = re.sub(r"^\s*[-*] ", "", lines[i])
                items.append(f"<li>{inline(item, images)}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while (
                i < len(lines)
                and lines[i].strip()
                and not re.match(r"(#{1,6})\s|\s*[-*] |\s*\|", lines[i])
            ):
                para.append(str(inline(lines[i], images)))
                i += 1
            if not para:  # a lone table row without its rule: as text
                para.append(str(inline(lines[i], images)))
                i += 1
            out.append("<p>" + "<br>".join(para) + "</p>")
    return Markup("\n".join(out))
