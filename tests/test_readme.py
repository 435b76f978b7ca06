"""The README's commands are the ones CI runs, and every flag they use exists.

The README is the short front page; the depth is in pages under ``docs/`` that it links to. The
checks follow those links (and the pages' own links to other pages under ``docs/``) and hold every
page reached to the same rules: its commands' flags exist, the flags its prose names exist, every
local link and picture points at a file that exists (and an anchor at a heading of that page).
"""

from __future__ import annotations

import importlib
import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_PATH = ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
TOOLS = ("train", "crossval", "predict", "evaluate", "bids", "export")

#: one page per topic, each linked from the README (issue 29: "a table of contents into docs/")
TOPIC_PAGES = ("install", "own_data", "bids", "predict", "reports", "backbones", "cluster", "export",
               "file_promises", "reproducibility", "results", "real_scans", "benchmarks", "deviations")

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def _without_code(text: str) -> str:
    """The text without fenced blocks and inline code spans (a link is never inside either)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


def _local_links(page: Path, pattern: re.Pattern = _LINK) -> list[tuple[Path, str]]:
    """(file, anchor) of every relative link (or picture, with ``_IMAGE``) of a page; web links left out."""
    links = []
    for target in pattern.findall(_without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path, _, anchor = target.partition("#")
        links.append(((page.parent / path).resolve() if path else page, anchor))
    return links


def _pages() -> list[Path]:
    """The README and every Markdown page under docs/ reached from it by links, link by link."""
    docs = DOCS.resolve()
    seen: list[Path] = []
    todo = [README_PATH.resolve()]
    while todo:
        page = todo.pop(0)
        if page in seen:
            continue
        seen.append(page)
        todo += [target for target, _ in _local_links(page)
                 if target.suffix == ".md" and target.is_file() and docs in target.parents]
    return seen


PAGES = _pages()


def _name(page: Path) -> str:
    return page.relative_to(ROOT.resolve()).as_posix()


def _code_blocks(heading: str | None = None, text: str = README) -> list[list[str]]:
    if heading is not None:
        start = text.index(heading)
        following = text.find("\n## ", start + 1)
        text = text[start : following if following > 0 else None]
    return [[line for line in block.strip().splitlines() if line.strip()]
            for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_setup_is_two_commands_that_ci_runs_verbatim():
    (setup,) = _code_blocks("## Set up")
    assert len(setup) == 2
    assert setup[0].startswith("python -m pip install -e") and "python -m pytest" in setup[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    for command in setup:
        assert command in ci, command
    (main_job,) = _code_blocks("## Main job")
    assert len(main_job) == 1 and "python -m planar3d.crossval --preset demo" in main_job[0]


def test_the_readme_is_a_short_front_page_with_one_link_per_topic():
    """Issue 29: read in two minutes; the main job's "what to expect" in a few lines; the depth
    one link away, in docs/."""
    assert len(README.splitlines()) <= 120
    start = README.index("## Main job")
    section = README[start : README.index("\n## ", start + 1)]
    after_command = section[section.index("```", section.index("```bash") + 3) + 3 :]
    assert len([line for line in after_command.splitlines() if line.strip()]) <= 5
    linked = {target for target, _ in _local_links(README_PATH.resolve())}
    missing = [page for page in TOPIC_PAGES if (DOCS / f"{page}.md").resolve() not in linked]
    assert missing == [], f"the README links no page for {missing}"
    assert _local_links(README_PATH.resolve(), _IMAGE), "the README shows no picture"
    assert {_name(DOCS / f"{page}.md") for page in TOPIC_PAGES} <= {_name(page) for page in PAGES}


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", lambda m: "_" if m.group() == "_" else "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    slugs: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"),
                                                                flags=re.S), flags=re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in slugs else f"{slug}-{slugs[slug]}")
        slugs[slug] = slugs.get(slug, 0) + 1
    return anchors


def test_slugs_are_githubs():
    assert _slug("Set up (a fresh machine, from the repository's folder)") == \
        "set-up-a-fresh-machine-from-the-repositorys-folder"
    assert _slug("A harder phantom: `--phantom-mode realistic`") == "a-harder-phantom---phantom-mode-realistic"
    assert _slug("Registry backbones × mappings as 3D U-Nets") == "registry-backbones--mappings-as-3d-u-nets"
    assert _slug("Durable writes: `benchmarks/bench_fsync.py` (issue 16)") == \
        "durable-writes-benchmarksbench_fsyncpy-issue-16"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_link_and_picture_of_a_page_exists(page):
    for target, anchor in _local_links(page):
        assert target.exists(), f"{_name(page)} links to {target}, which does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{_name(page)} links to #{anchor}, not a heading of {target.name}"
    for target, _ in _local_links(page, _IMAGE):
        assert target.is_file() and target.stat().st_size > 0, f"{_name(page)} shows a missing picture {target}"


def test_every_figure_under_docs_is_shown_or_linked_from_a_page():
    """Moving text off the front page must not orphan a figure: every PNG under docs/ is on a page
    the README reaches."""
    reached = {target for page in PAGES for target, _ in _local_links(page)}
    orphans = sorted(_name(png) for png in DOCS.resolve().rglob("*.png") if png not in reached)
    assert orphans == []


def _commands(prefix: re.Pattern) -> list[tuple[str, list[str]]]:
    """(page, words from the tool or script on) of every line of the pages' bash blocks that runs it."""
    commands = []
    for page in PAGES:
        for block in _code_blocks(text=page.read_text(encoding="utf-8")):
            for line in block:
                words = shlex.split(line, comments=True)
                for i, word in enumerate(words):
                    if prefix.fullmatch(word) and (i == 0 or words[i - 1] in ("python", "-m")):
                        commands.append((_name(page), words[i:]))
                        break
    return commands


@pytest.mark.parametrize("page, command", _commands(re.compile(r"planar3d\.\w+")),
                         ids=lambda c: c if isinstance(c, str) else " ".join(c[:2]))
def test_documented_flags_exist(page, command, capsys):
    module = importlib.import_module(command[0])
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    flags = _whole_flags(capsys.readouterr().out)
    for word in command[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in flags, f"{page}: {command[0]} has no flag {word}"


_SCRIPT = re.compile(r"(?:benchmarks|data_prep)/\w+\.py")
#: a span that runs a script: ``python benchmarks/x.py --flag``, or the script and its flags alone
_RUNS_SCRIPT = re.compile(r"(?:(?:\w+=\S+ )*python3? )?((?:benchmarks|data_prep)/\w+\.py)(?= |$)")


@pytest.mark.parametrize("page, command", _commands(_SCRIPT), ids=lambda c: c if isinstance(c, str) else c[0])
def test_documented_scripts_and_their_flags_exist(page, command):
    flags = _script_flags(command[0])
    for word in command[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in flags, f"{page}: {command[0]} has no flag {word}"


@lru_cache(maxsize=None)
def _script_flags(script: str) -> frozenset[str]:
    """The ``--flags`` a benchmark or data_prep script defines, read from its source (and from
    planar3d.cli.common where it adds the shared flags) without running it."""
    path = ROOT / script
    assert path.is_file(), f"no script {script}"
    source = path.read_text(encoding="utf-8")
    if "planar3d.cli.common" in source:
        source += (ROOT / "planar3d" / "cli" / "common.py").read_text(encoding="utf-8")
    flags = set(re.findall(r"[\"'](--[a-z0-9][a-z0-9-]*)[\"']", source)) | {"--help"}
    if "BooleanOptionalAction" in source:
        flags |= {f"--no-{flag[2:]}" for flag in flags}
    return frozenset(flags)


def _whole_flags(help_text: str) -> set[str]:
    """Every ``--flag`` of a help text as a whole word: ``--threshold-rule`` is not ``--threshold``."""
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*(?![\w-])", help_text))


def test_flag_matching_takes_whole_flags():
    flags = _whole_flags("  --threshold-rule {fixed,reference}\n  --no-tta, --tta  average (default: off)")
    assert flags == {"--threshold-rule", "--no-tta", "--tta"}
    assert "--threshold" not in flags


_TOOL_FLAGS: dict[str, set[str]] = {}


def _help_flags(module_name: str, capsys) -> set[str]:
    if module_name not in _TOOL_FLAGS:
        module = importlib.import_module(module_name)
        with pytest.raises(SystemExit):
            module.main(["--help"])
        _TOOL_FLAGS[module_name] = _whole_flags(capsys.readouterr().out)
    return _TOOL_FLAGS[module_name]


def _prose_spans(text: str) -> list[str]:
    return re.findall(r"`([^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S))


def test_flags_named_in_the_prose_exist(capsys):
    """The README's prose: every flag it names is a flag of one of the tools."""
    named = {flag for span in _prose_spans(README) for flag in _whole_flags(span)} - {"--help"}
    assert "--threshold" in named and "--threshold-rule" in named  # the README names both
    known = set().union(*(_help_flags(f"planar3d.{tool}", capsys) for tool in TOOLS))
    assert sorted(named - known) == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_flags_named_in_a_pages_prose_exist(page, capsys):
    """The same for every page the README reaches. A span that runs a benchmark or data_prep script
    is held to that script's flags; other spans to the tools' flags and those of the scripts the
    page names (a benchmark's page may name its flags alone)."""
    text = page.read_text(encoding="utf-8")
    tools = set().union(*(_help_flags(f"planar3d.{tool}", capsys) for tool in TOOLS))
    scripts = set().union(*(_script_flags(script) for script in set(_SCRIPT.findall(text))
                            if (ROOT / script).is_file()))
    unknown = []
    for span in _prose_spans(text):
        flags = _whole_flags(span) - {"--help"}
        script = _RUNS_SCRIPT.match(span)
        if script:
            after = _whole_flags(span[script.end():]) - {"--help"}
            if after and not (ROOT / script[1]).is_file():
                unknown.append(f"{script[1]} (no such script)")
            elif after:
                unknown += [f"{flag} ({script[1]})" for flag in sorted(after - _script_flags(script[1]))]
            flags -= after
        unknown += sorted(flags - tools - scripts)
    assert unknown == [], f"{_name(page)} names flags no tool has: {unknown}"
