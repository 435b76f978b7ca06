"""The README's commands are the ones CI runs, and every flag they use exists."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_blocks(heading: str | None = None) -> list[list[str]]:
    text = README
    if heading is not None:
        start = README.index(heading)
        following = README.find("\n## ", start + 1)
        text = README[start : following if following > 0 else None]
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


def _planar3d_commands() -> list[list[str]]:
    commands = []
    for block in _code_blocks():
        for line in block:
            words = shlex.split(line)
            if "-m" in words and words[words.index("-m") + 1].startswith("planar3d."):
                commands.append(words[words.index("-m") + 1 :])
    return commands


@pytest.mark.parametrize("command", _planar3d_commands(), ids=lambda c: " ".join(c[:2]))
def test_documented_flags_exist(command, capsys):
    module = importlib.import_module(command[0])
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    flags = _whole_flags(capsys.readouterr().out)
    for word in command[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in flags, f"{command[0]} has no flag {word}"


def _whole_flags(help_text: str) -> set[str]:
    """Every ``--flag`` of a help text as a whole word: ``--threshold-rule`` is not ``--threshold``."""
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*(?![\w-])", help_text))


def test_flag_matching_takes_whole_flags():
    flags = _whole_flags("  --threshold-rule {fixed,reference}\n  --no-tta, --tta  average (default: off)")
    assert flags == {"--threshold-rule", "--no-tta", "--tta"}
    assert "--threshold" not in flags


def _help_flags(module_name: str, capsys) -> set[str]:
    module = importlib.import_module(module_name)
    with pytest.raises(SystemExit):
        module.main(["--help"])
    return _whole_flags(capsys.readouterr().out)


def test_flags_named_in_the_prose_exist(capsys):
    spans = re.findall(r"`([^`]*)`", re.sub(r"```.*?```", "", README, flags=re.S))
    named = {flag for span in spans for flag in _whole_flags(span)} - {"--help"}
    assert "--threshold" in named and "--threshold-rule" in named  # the README names both
    known = set().union(*(_help_flags(f"planar3d.{tool}", capsys) for tool in ("train", "crossval", "predict", "evaluate", "bids",
                                                                                          "export")))
    assert sorted(named - known) == []
