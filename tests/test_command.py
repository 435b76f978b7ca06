"""The umbrella ``planar3d`` command and the BIDS Apps spellings of the BIDS App."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from planar3d import __version__
from planar3d.cli import bids, command, crossval, evaluate, export, predict, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, tool", [("train", train), ("crossval", crossval), ("predict", predict),
                                        ("evaluate", evaluate), ("bids", bids),
                                        ("export", export)])
def test_each_command_is_the_tools_own_main(name, tool, capsys):
    with pytest.raises(SystemExit) as direct:
        tool.main(["--help"])
    expected = capsys.readouterr().out
    with pytest.raises(SystemExit) as through:
        command.main([name, "--help"])
    assert capsys.readouterr().out == expected and direct.value.code == through.value.code == 0
    assert f"planar3d.{name}" in expected


def test_usage_version_and_unknown_commands(capsys):
    assert command.main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in command.COMMANDS)
    assert command.main([]) == 2 and "usage: planar3d <command>" in capsys.readouterr().err
    assert command.main(["--version"]) == 0 and capsys.readouterr().out == f"planar3d {__version__}\n"
    assert command.main(["tarin"]) == 2
    assert capsys.readouterr().err == ("planar3d: error: unknown command 'tarin' (choose from train, crossval, "
                                       "predict, evaluate, bids, export)\n")


def test_console_scripts_name_every_command():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    scripts = dict(line.split(" = ") for line in parser["options.entry_points"]["console_scripts"].strip().splitlines())
    assert scripts["planar3d"] == "planar3d.cli.command:main"
    for name in command.COMMANDS:
        assert scripts[f"planar3d-{name}"] == f"planar3d.cli.{name}:main"


def test_bids_app_takes_the_specifications_spellings(tmp_path, capsys):
    with pytest.raises(SystemExit) as version:
        bids.main(["-v"])
    assert version.value.code == 0 and capsys.readouterr().out == f"planar3d {__version__}\n"
    missing = tmp_path / "no_dataset"
    status = bids.main([str(missing), str(tmp_path / "out"), "group", "--participant_label", "sub-01", "02",
                        "--session_label", "1", "--skip_bids_validator"])
    error = capsys.readouterr().err
    assert status == 2 and "unrecognized arguments" not in error and str(missing) in error
