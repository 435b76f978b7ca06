"""The suite on two workers (``pytest -n 2``, tests/conftest.py): every test carries its module's
xdist group, and the tests that share a costly session fixture (a training, the exports) are in
one group, so that one worker builds it once instead of each worker building its own."""

import ast
from pathlib import Path

import pytest

from conftest import _LONGEST_FIRST, _SHARED_GROUPS

#: session fixtures that train a model or export one (minutes each)
COSTLY_SESSION_FIXTURES = ("tiny_fold_0", "exports")


def _modules_using(fixture: str) -> set[str]:
    """Test modules with a test or fixture that takes ``fixture`` as an argument."""
    modules = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(arg.arg == fixture for arg in node.args.args):
                modules.add(path.stem)
    return modules


@pytest.mark.parametrize("fixture", COSTLY_SESSION_FIXTURES)
def test_modules_sharing_a_costly_session_fixture_share_a_worker(fixture):
    users = _modules_using(fixture)
    assert len(users) >= 2, users  # the fixture exists to be shared
    assert {_SHARED_GROUPS.get(module, module) for module in users} == {_SHARED_GROUPS.get(min(users), min(users))}, (
        f"{fixture} is used by {sorted(users)}: name them in conftest._SHARED_GROUPS as one group")


def test_every_test_carries_its_module_group(request):
    marker = request.node.get_closest_marker("xdist_group")
    assert marker is not None and marker.args == ("test_worker_groups",)


def test_the_longest_groups_name_existing_modules():
    modules = {path.stem for path in Path(__file__).parent.glob("test_*.py")}
    assert set(_LONGEST_FIRST) <= modules, sorted(set(_LONGEST_FIRST) - modules)
    assert set(_SHARED_GROUPS) | set(_SHARED_GROUPS.values()) <= modules
