"""One self-contained HTML page from plain data: the report a reader opens in a browser.

:func:`render_report` turns a title, warnings, totals, sections (text, pictures, tables, a
Markdown summary), the model, the command, the versions and the machine into one HTML
document; :func:`write_report` writes it atomically. The page needs nothing but itself:

* pictures are embedded as ``data:`` URIs (base64), styles are one inline ``<style>``,
  and one small inline ``<script>`` sorts the tables (click a column header; again to
  reverse). A Content-Security-Policy (``default-src 'none'``, the style and script allowed
  by their hashes, pictures from ``data:`` only) keeps the browser from loading anything
  else, so the page opens offline and shows the same thing anywhere;
* every text is escaped (:func:`html.escape`), whatever the file names or table values hold;
* warnings a reader must see (a scan that failed, lesions outside the head, a model trained
  on the phantom only) come first, in a red box.

Sections are dicts (all keys optional but ``title``)::

    {"title": "sub-01", "text": ["a paragraph", ...], "images": [path | (path, caption) |
     {"path": ..., "caption": ...} | {"data": png bytes, "caption": ...}],
     "tables": [{"title": ..., "rows": [dict, ...], "columns": [...], "caption": ...}],
     "markdown": "a summary.md text (headings, paragraphs, lists, pipe tables)",
     "collapsed": False}

Table rows are dicts; every table of ``tables`` is ``<table class="sortable">`` with one header
row and one body row per row given (a Markdown pipe table too). Numbers are shown rounded
and sorted by their value (``data-value``).

Used by ``predict`` (folder mode), the BIDS App (participant and group levels), ``evaluate``
and ``crossval``; see README.md, "Reports".
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import html
import json
import math
import os
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from planar3d import __version__
from planar3d.atomic import write_text_atomic
from planar3d.errors import InputFileError
from planar3d.inference.runtimes import METADATA_NAME, read_metadata
from planar3d.io.phantom import INFO_NAME as PHANTOM_INFO
from planar3d.machine import cpu_isa_flags, cpu_name

__all__ = [
    "PHANTOM_WARNING", "REPORT_LIBRARIES", "command_line", "environment", "figure_png", "lesions_outside_head",
    "markdown_html", "model_info", "model_warnings", "render_report", "sha256", "write_report", "write_summary_report",
]


#: The libraries whose versions a page names (read from the installed metadata: nothing is imported).
REPORT_LIBRARIES = ("tensorflow", "keras", "numpy", "nibabel")


#: The warning of a model whose run config says it learnt from a phantom.
PHANTOM_WARNING = "model trained on the phantom only"


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}


_STYLE = """
:root { color-scheme: light; --line: #d0d7de; --muted: #57606a; --warn: #b42318; --warn-bg: #fef3f2; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; max-width: 1280px; padding: 1.5rem 2rem 4rem; color: #1f2328; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.08rem; margin: 1.4rem 0 .4rem; }
p.meta { color: var(--muted); margin: 0 0 1rem; }
nav ul { margin: .3rem 0 0; padding-left: 1.2rem; columns: 2; }
.warnings { border: 2px solid var(--warn); background: var(--warn-bg); border-radius: 6px; padding: .6rem 1rem;
            margin: 1rem 0; }
.warnings h2 { color: var(--warn); border: 0; margin: 0 0 .3rem; font-size: 1.15rem; }
.warnings li { margin: .15rem 0; }
.totals { display: flex; flex-wrap: wrap; gap: .7rem; margin: 1rem 0; padding: 0; }
.totals div { border: 1px solid var(--line); border-radius: 6px; padding: .45rem .8rem; min-width: 9rem; }
.totals dt { color: var(--muted); font-size: .82rem; }
.totals dd { margin: 0; font-size: 1.25rem; font-weight: 600; }
figure { margin: .8rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); display: block; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: .25rem; }
.table-wrap { overflow-x: auto; margin: .4rem 0 1rem; }
table { border-collapse: collapse; font-size: .88rem; }
th, td { border: 1px solid var(--line); padding: .22rem .55rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f6f8fa; white-space: nowrap; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th::after { content: " \\2195"; color: #8c959f; font-size: .8em; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\25B2"; color: #1f2328; }
table.sortable thead th[aria-sort="descending"]::after { content: " \\25BC"; color: #1f2328; }
tbody tr:nth-child(even) { background: #fafbfc; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem;
      white-space: pre-wrap; word-break: break-all; font-size: .85rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em; }
details > summary { cursor: pointer; font-weight: 600; margin: .5rem 0; }
.missing { color: var(--warn); }
footer { color: var(--muted); font-size: .85rem; margin-top: 3rem; }
"""


# Sorts a table.sortable by the clicked header (again: reversed); numbers by data-value, the rest as text.
_SCRIPT = """
(function () {
  function key(row, index) {
    var cell = row.cells[index];
    if (!cell) { return ""; }
    var value = cell.getAttribute("data-value");
    if (value !== null && value.trim() !== "" && isFinite(Number(value))) { return Number(value); }
    return cell.textContent.trim().toLowerCase();
  }
  function compare(a, b) {
    if (typeof a === typeof b) { return a < b ? -1 : (a > b ? 1 : 0); }
    return typeof a === "number" ? -1 : 1;
  }
  function sortBy(header) {
    var table = header.closest("table");
    var body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(header.parentNode.children, header);
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(header.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var order = compare(key(a, index), key(b, index));
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable thead th").forEach(function (header) {
    header.tabIndex = 0;
    header.title = "sort by this column";
    header.addEventListener("click", function () { sortBy(header); });
    header.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(header); }
    });
  });
})();
"""


def _hash_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


_POLICY = (f"default-src 'none'; img-src data:; style-src {_hash_source(_STYLE)}; script-src {_hash_source(_SCRIPT)}; "
           "base-uri 'none'; form-action 'none'")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# ----------------------------------------------------------------------------- facts for the page
def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _training_data(model: Path) -> tuple[str, bool | None]:
    """What the run config beside a model says it learnt from: ``(description, phantom?)``.

    ``config.json``'s ``data`` is None for the built-in phantom; a data folder holding
    ``phantom.json`` (or ``sourcedata/phantom.json``, a BIDS phantom) was made by
    ``data_prep/make_phantom.py``. Without a readable config the answer is unknown (None). An
    export folder answers for the model it was exported from (``source_model`` in its ``export.json``).
    """
    if (model / METADATA_NAME).is_file():
        with contextlib.suppress(InputFileError, KeyError, TypeError):
            model = Path(read_metadata(model)["source_model"])
    path = model.parent / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"unknown (no readable {path.name} beside the model)", None
    if not isinstance(config, dict):
        return f"unknown ({path} holds no settings)", None
    data = config.get("data")
    if data is None:
        mode = config.get("phantom_mode", "simple")
        scale = config.get("phantom_scale")
        return f"the built-in phantom ({mode}{'' if scale is None else f', scale {scale:g}'})", True
    folder = Path(str(data)).expanduser()
    if not folder.is_absolute():
        folder = path.parent / folder if (path.parent / folder).exists() else folder
    if (folder / PHANTOM_INFO).is_file() or (folder / "sourcedata" / PHANTOM_INFO).is_file():
        return f"a phantom made by data_prep/make_phantom.py ({data})", True
    return f"{data}", False


def model_info(files: Sequence[str | os.PathLike] | str | os.PathLike | None, shas: Sequence[str] | None = None) -> dict:
    """The model(s) a page names: path, SHA-256 and training data of each ``.keras`` file.

    Args:
        files: one model file or an ensemble's files (None: no model on this page).
        shas: their SHA-256 when already computed (else computed here; ``None`` for a
            missing file).

    Returns:
        ``{"members": [{"path", "sha256", "training_data", "phantom"}], "phantom": bool}``:
        ``phantom`` when some member's run config says it learnt from a phantom.
    """
    if files is None:
        return {"members": [], "phantom": False}
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    members = []
    for index, file in enumerate(files):
        path = Path(file)
        digest = shas[index] if shas is not None else (sha256(path) if path.is_file() else None)
        data, phantom = _training_data(path)
        members.append({"path": str(path.resolve()), "sha256": digest, "training_data": data, "phantom": bool(phantom)})
    return {"members": members, "phantom": any(m["phantom"] for m in members)}


def model_warnings(model: Mapping | None) -> list[str]:
    """``[PHANTOM_WARNING ...]`` for a :func:`model_info` whose members learnt from a phantom."""
    if not model or not model.get("phantom"):
        return []
    data = "; ".join(sorted({m["training_data"] for m in model["members"] if m["phantom"]}))
    return [f"{PHANTOM_WARNING} ({data}): its masks on real scans are not to be trusted; train on real data "
            "(README, 'Using your own data')"]


def lesions_outside_head(table: Sequence[Mapping]) -> list:
    """The ids of the lesions a lesion table marks as outside the head mask (a true ``outside_head``
    column, or a false ``in_head`` one); ``[]`` when the table does not say."""
    found = []
    for row in table:
        outside = row.get("outside_head")
        inside = row.get("in_head")
        if outside in (True, 1, "1", "true", "True") or inside in (False, 0, "0", "false", "False"):
            found.append(row.get("id", row.get("lesion_id", "?")))
    return found


def command_line(prog: str, argv: Sequence[str] | None = None) -> str:
    """The command a page records: ``sys.argv`` as typed (``argv`` None), else ``python -m prog argv``
    (a tool called from Python with its arguments)."""
    if argv is None:
        return shlex.join(sys.argv)
    return shlex.join(["python", "-m", prog, *argv])


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict:
    """Versions (planar3d, Python, :data:`REPORT_LIBRARIES`) and the machine (CPU, its vector
    instruction sets, cores, OS; the GPUs when TensorFlow is loaded already), importing nothing heavy."""
    versions = {"planar3d": __version__, "python": platform.python_version(),
                **{name: _version(name) for name in REPORT_LIBRARIES}}
    machine = {"host": platform.node(), "os": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
               "cpu_isa": " ".join(cpu_isa_flags()) or "unknown"}
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            machine["gpus"] = ", ".join(d.name for d in tf.config.list_physical_devices("GPU")) or "none"
        except Exception:  # a half-initialised TensorFlow says nothing useful here
            pass
    return {"versions": versions, "machine": machine}


def figure_png(figure) -> bytes:
    """A matplotlib figure as PNG bytes (to embed without writing a file)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- rendering
def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        try:
            return _number(value.item())
        except (TypeError, ValueError):
            return None
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value):
        return float(value)
    return None


def _format_number(value: float, integer: bool) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if integer and value == int(value):
        return str(int(value))
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.3e}"
    decimals = max(0, 3 - int(math.floor(math.log10(magnitude))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _cell(value: Any, tag: str = "td") -> str:
    number = _number(value)
    if value is None:
        return f"<{tag}>n/a</{tag}>"
    if number is None:
        return f"<{tag}>{_e(value)}</{tag}>"
    integer = isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value) is not None)
    shown = _format_number(number, integer)
    exact = repr(number) if math.isfinite(number) else ""
    return f'<{tag} class="num" data-value="{_e(exact)}">{_e(shown)}</{tag}>'


def _table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, caption: str | None = None,
           sortable: bool = True) -> str:
    if columns is None:
        columns = []
        for row in rows:
            columns += [key for key in row if key not in columns]
    head = "".join(f'<th scope="col">{_e(column)}</th>' for column in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(column)) for column in columns) + "</tr>" for row in rows)
    kind = ' class="sortable"' if sortable else ""
    text = f"<caption>{_e(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table{kind} data-rows="{len(rows)}">{text}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _pairs_table(values: Mapping[str, Any]) -> str:
    rows = "".join(f'<tr><th scope="row">{_e(key)}</th><td>{_e("n/a" if value is None else value)}</td></tr>'
                   for key, value in values.items())
    return f'<div class="table-wrap"><table class="facts"><tbody>{rows}</tbody></table></div>'


def _image(item: Any, problems: list[str]) -> str:
    if isinstance(item, Mapping):
        path, data, caption = item.get("path"), item.get("data"), item.get("caption")
    elif isinstance(item, (tuple, list)):
        path, data, caption = item[0], None, item[1] if len(item) > 1 else None
    else:
        path, data, caption = item, None, None
    mime = "image/png"
    if data is None:
        path = Path(path)
        caption = caption if caption is not None else path.name
        mime = _MIME.get(path.suffix.lower(), "")
        try:
            data = path.read_bytes() if mime else None
        except OSError:
            data = None
        if not data:
            problems.append(f"picture missing or unreadable: {path}")
            return f'<p class="missing">picture missing or unreadable: <code>{_e(path)}</code></p>'
    uri = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    text = _e(caption or "")
    return f'<figure><img src="{uri}" alt="{text}" loading="eager"><figcaption>{text}</figcaption></figure>'


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    """Markdown inline code and bold (everything else escaped as text)."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(_e(text[last:match.start()]))
        out.append(f"<code>{_e(match.group(1))}</code>" if match.group(1) is not None else f"<strong>{_e(match.group(2))}</strong>")
        last = match.end()
    out.append(_e(text[last:]))
    return "".join(out).replace("&lt;br&gt;", "<br>")


def _split_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def markdown_html(text: str, level: int = 3) -> str:
    """A small Markdown subset (the summaries planar3d writes): ``#`` headings (shifted to start at
    ``level``), pipe tables (sortable), ``-`` lists, paragraphs, inline code and bold."""
    lines = text.splitlines()
    out: list[str] = []
    paragraph: list[str] = []
    index = 0

    def flush() -> None:
        if paragraph:
            out.append("<p>" + _inline(" ".join(paragraph)) + "</p>")
            paragraph.clear()

    while index < len(lines):
        line = lines[index].rstrip()
        stripped = line.strip()
        heading = re.match(r"(#{1,6})\s+(.*)", stripped)
        if not stripped:
            flush()
        elif heading:
            flush()
            depth = min(6, level + len(heading.group(1)) - 1)
            out.append(f"<h{depth}>{_inline(heading.group(2))}</h{depth}>")
        elif stripped.startswith("|") and index + 1 < len(lines) and re.fullmatch(r"\|?[\s:|-]+\|?", lines[index + 1].strip()):
            flush()
            header = _split_row(stripped)
            index += 2
            body = []
            while index < len(lines) and lines[index].strip().startswith("|"):
                body.append(_split_row(lines[index]))
                index += 1
            head = "".join(f'<th scope="col">{_inline(cell)}</th>' for cell in header)
            rows = "".join("<tr>" + "".join(
                (f'<td class="num" data-value="{_e(repr(_number(cell)))}">{_e(cell)}</td>' if _number(cell) is not None
                 else f"<td>{_inline(cell)}</td>") for cell in row) + "</tr>" for row in body)
            out.append(f'<div class="table-wrap"><table class="sortable" data-rows="{len(body)}"><thead><tr>{head}</tr>'
                       f"</thead><tbody>{rows}</tbody></table></div>")
            continue
        elif re.match(r"[-*]\s+", stripped):
            flush()
            items = []
            while index < len(lines) and re.match(r"\s*[-*]\s+", lines[index]):
                items.append("<li>" + _inline(re.sub(r"^\s*[-*]\s+", "", lines[index])) + "</li>")
                index += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        else:
            paragraph.append(stripped)
        index += 1
    flush()
    return "\n".join(out)


def _section(number: int, section: Mapping, problems: list[str]) -> str:
    title = str(section.get("title", f"Section {number}"))
    parts = []
    text = section.get("text") or []
    for paragraph in [text] if isinstance(text, str) else text:
        parts.append(f"<p>{_e(paragraph)}</p>")
    if section.get("markdown"):
        parts.append(markdown_html(str(section["markdown"])))
    for table in section.get("tables") or []:
        if table.get("title"):
            parts.append(f"<h3>{_e(table['title'])}</h3>")
        if table.get("rows"):
            parts.append(_table(table["rows"], table.get("columns"), table.get("caption")))
        else:
            parts.append(f"<p>{_e(table.get('empty', 'no rows'))}</p>")
    for image in section.get("images") or []:
        parts.append(_image(image, problems))
    body = "\n".join(parts)
    anchor = f"s{number}"
    if section.get("collapsed"):
        return (f'<section id="{anchor}"><details><summary>{_e(title)}</summary>\n{body}\n</details></section>')
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def _provenance(model: Mapping | None, command: str | None, facts: Mapping) -> str:
    parts = ['<section id="provenance"><h2>How this page was made</h2>']
    if model and model.get("members"):
        parts.append("<h3>Model</h3>")
        for member in model["members"]:
            parts.append(_pairs_table({"path": member["path"], "sha256": member.get("sha256") or "n/a",
                                       "training data": member["training_data"]}))
    if command:
        parts.append(f"<h3>Command</h3><pre><code>{_e(command)}</code></pre>")
    parts.append("<h3>Versions</h3>" + _pairs_table(facts["versions"]))
    parts.append("<h3>Machine</h3>" + _pairs_table(facts["machine"]))
    parts.append("</section>")
    return "\n".join(parts)


def render_report(
    title: str,
    sections: Sequence[Mapping] = (),
    warnings: Sequence[str] = (),
    totals: Mapping[str, Any] | None = None,
    model: Mapping | None = None,
    command: str | None = None,
    intro: str | None = None,
) -> str:
    """The HTML page (see the module docstring).

    Args:
        title: the page's title and heading.
        sections: section dicts, in order.
        warnings: texts shown first, in a red box (a missing picture and a phantom-trained
            ``model`` add theirs).
        totals: ``{label: value}`` shown as boxes under the title.
        model: :func:`model_info` of the model that made the outputs (None: no model).
        command: the command line (:func:`command_line`); default ``sys.argv``.
        intro: a paragraph under the title.
    """
    problems: list[str] = []
    rendered = [_section(number, section, problems) for number, section in enumerate(sections, start=1)]
    every_warning = [*model_warnings(model), *warnings, *problems]
    facts = environment()
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    head = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_POLICY)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f'<meta name="generator" content="planar3d {_e(__version__)}">',
        f"<title>{_e(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<header><h1>{_e(title)}</h1><p class=\"meta\">planar3d {_e(__version__)} · {_e(now)}</p></header>",
    ]
    body = []
    if intro:
        body.append(f"<p>{_e(intro)}</p>")
    if every_warning:
        items = "".join(f"<li>{_e(w)}</li>" for w in every_warning)
        body.append(f'<div class="warnings" role="alert" id="warnings"><h2>Warnings ({len(every_warning)})</h2>'
                    f"<ul>{items}</ul></div>")
    if totals:
        cards = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(_shown(v))}</dd></div>" for k, v in totals.items())
        body.append(f'<dl class="totals">{cards}</dl>')
    if len(sections) > 1:
        links = "".join(f'<li><a href="#s{n}">{_e(s.get("title", f"Section {n}"))}</a></li>'
                        for n, s in enumerate(sections, start=1))
        body.append(f'<nav><strong>Contents</strong><ul>{links}<li><a href="#provenance">How this page was made</a>'
                    "</li></ul></nav>")
    body += rendered
    body.append(_provenance(model, command if command is not None else shlex.join(sys.argv), facts))
    body.append("<footer>Self-contained page written by planar3d: it loads nothing from outside and opens offline."
                "</footer>")
    tail = [f"<script>{_SCRIPT}</script>", "</body>", "</html>", ""]
    return "\n".join(head + body + tail)


def _shown(value: Any) -> str:
    number = _number(value)
    if number is None or isinstance(value, str):
        return str(value)
    return _format_number(number, isinstance(value, int))


def write_report(path: str | os.PathLike, title: str, **content) -> Path:
    """:func:`render_report` written atomically to ``path`` (replacing it); return the path.

    Check the destination before the work that precedes it
    (:func:`planar3d.atomic.check_destinations`): this writes whatever is there.
    """
    return write_text_atomic(path, render_report(title, **content))


def write_summary_report(path: str | os.PathLike, title: str, summary: str, rows: Sequence[Mapping],
                         figures: Sequence = (), qc: Sequence = (), warnings: Sequence[str] = (),
                         model: Mapping | None = None, command: str | None = None, rows_title: str = "Per scan",
                         rows_note: str | None = None) -> Path:
    """The page of ``evaluate`` and ``crossval``: the ``summary.md`` text (its tables sortable), the
    per-scan table, the figures (box plots ...) and the QC pictures (``(path, caption)`` or paths).

    Totals: the scans and the mean Dice, sensitivity and lesion F1 over them (where the rows have them).
    """
    totals: dict[str, Any] = {"scans": len(rows)}
    for key, label in (("dice", "mean Dice"), ("sensitivity", "mean sensitivity"), ("lesion_f1", "mean lesion F1")):
        values = [_number(row.get(key)) for row in rows]
        values = [v for v in values if v is not None and math.isfinite(v)]
        if values:
            totals[label] = round(sum(values) / len(values), 3)
    sections = [{"title": "Summary", "markdown": summary}]
    if figures:
        sections.append({"title": "Figures", "images": list(figures)})
    sections.append({"title": rows_title, "text": [rows_note] if rows_note else [], "tables": [{"rows": list(rows)}]})
    if qc:
        sections.append({"title": "QC pictures", "images": list(qc),
                         "text": ["The FLAIR with the predicted (red) and reference (green; both: yellow) lesions."]})
    return write_report(path, title, sections=sections, warnings=warnings, totals=totals, model=model, command=command)
