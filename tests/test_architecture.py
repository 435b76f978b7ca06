"""The package's import graph: stages import only downward, no cycles, no private names, one vocabulary.

Built with ``ast`` from the source (nothing is imported), so a violation names the file and line.
See docs/architecture.md for the layers.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "planar3d"

#: Stage order, lowest first: a module may import modules of its own layer or of lower ones.
LAYERS = (
    ("planar3d", "planar3d.errors", "planar3d.config", "planar3d.atomic", "planar3d.machine", "planar3d.runlock"),
    ("planar3d.io",),
    ("planar3d.data",),
    ("planar3d.nets",),
    ("planar3d.inference",),
    ("planar3d.evaluation",),
    ("planar3d.training",),
    ("planar3d.runs",),
    ("planar3d.apps",),
    ("planar3d.cli",),
    # the ``python -m planar3d[.<tool>]`` doors, and the old pickle path of TrainJob
    ("planar3d.train", "planar3d.crossval", "planar3d.predict", "planar3d.evaluate", "planar3d.bids", "planar3d.export",
     "planar3d.launch", "planar3d.__main__"),
)

#: Libraries that may be imported inside a function (optional extras, or heavy ones kept off ``--help``).
LAZY_LIBRARIES = {"tensorflow", "keras", "submitit", "yaml", "matplotlib", "sklearn", "tqdm", "nilearn", "h5py",
                  "scipy", "nibabel", "bidsschematools", "subprocess",
                  "onnx", "onnxruntime", "openvino", "tf2onnx"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(path): ast.parse(path.read_text(encoding="utf-8"), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "planar3d" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer of LAYERS"
    return best[0]


def _imports(modules: dict[str, ast.Module]):
    """``(importer, imported module, names, line, inside a function)`` for every planar3d import."""
    for name, tree in modules.items():
        functions = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                     for node in ast.walk(fn) if node is not fn}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "planar3d":
                names = [alias.name for alias in node.names]
                # ``from planar3d.x import y`` where y is a module is an import of planar3d.x.y
                targets = [f"{node.module}.{n}" if f"{node.module}.{n}" in modules else node.module for n in names]
                for target, imported in zip(targets, names):
                    yield name, target, imported, node.lineno, id(node) in functions
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "planar3d":
                        yield name, alias.name, None, node.lineno, id(node) in functions


def _lazy_library_imports(modules: dict[str, ast.Module]):
    for name, tree in modules.items():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    roots = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    roots = [node.module.split(".")[0]]
                else:
                    continue
                for root in roots:
                    if root not in LAZY_LIBRARIES and root != "planar3d" and root not in sys.stdlib_module_names:
                        yield name, root, node.lineno


MODULES = _modules()
IMPORTS = list(_imports(MODULES))


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


def test_no_upward_import():
    upward = [f"{a}:{line} imports {b} (layer {_layer(b)} above {_layer(a)})"
              for a, b, _, line, _ in IMPORTS if _layer(b) > _layer(a)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for a, b, _, _, _ in IMPORTS:
        if b in graph and a != b:
            graph[a].add(b)
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


#: What a lazy planar3d import may keep off the start-up (``--help``, the TF-free modules).
HEAVY_LIBRARIES = ("tensorflow", "keras", "matplotlib", "sklearn", "nilearn", "submitit")


def _imports_heavy_library(name: str, seen: set[str] | None = None) -> bool:
    """True when importing ``name`` imports a :data:`HEAVY_LIBRARIES` one (directly or through planar3d modules)."""
    seen = set() if seen is None else seen
    if name in seen or name not in MODULES:
        return False
    seen.add(name)
    tree = MODULES[name]
    for node in tree.body:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in HEAVY_LIBRARIES for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in HEAVY_LIBRARIES:
            return True
    return any(_imports_heavy_library(b, seen) for a, b, _, _, lazy in IMPORTS if a == name and not lazy)


def test_lazy_planar3d_imports_only_keep_tensorflow_off_the_start_up():
    """An import inside a function may only defer a module that loads a heavy library (``--help``
    and the TF-free modules stay fast); any other would be a cycle dodged."""
    dodges = [f"{a}:{line} imports {b} inside a function, and {b} loads no heavy library"
              for a, b, _, line, lazy in IMPORTS if lazy and not _imports_heavy_library(b)]
    assert not dodges, "\n".join(dodges)


def test_lazy_library_imports_are_optional_or_heavy():
    others = [f"{a}:{line} imports {root} inside a function" for a, root, line in _lazy_library_imports(MODULES)]
    assert not others, "\n".join(others)


def test_no_private_name_crosses_modules():
    private = [f"{a}:{line} imports {b}.{name}" for a, b, name, line, _ in IMPORTS
               if name and name.startswith("_") and not name.startswith("__") and b != a]
    assert not private, "\n".join(private)


def test_the_import_graph_test_fails_on_a_cycle(tmp_path):
    """The cycle check itself: two modules that import each other are found."""
    global MODULES, IMPORTS
    saved = MODULES, IMPORTS
    try:
        MODULES = {"planar3d.io.a": ast.parse("from planar3d.io.b import x\n"),
                   "planar3d.io.b": ast.parse("from planar3d.io.a import y\n")}
        IMPORTS = list(_imports(MODULES))
        with pytest.raises(AssertionError, match=r"planar3d.io.a -> planar3d.io.b -> planar3d.io.a"):
            test_no_import_cycle()
        MODULES = {"planar3d.io.a": ast.parse("def f():\n    from planar3d.data.b import z\n"),
                   "planar3d.data.b": ast.parse("z = 1\n")}
        IMPORTS = list(_imports(MODULES))
        with pytest.raises(AssertionError, match="upward|layer 2 above 1"):
            test_no_upward_import()
        with pytest.raises(AssertionError, match="inside a function"):
            test_lazy_planar3d_imports_only_keep_tensorflow_off_the_start_up()
    finally:
        MODULES, IMPORTS = saved


# ----------------------------------------------------------------------------- one vocabulary


def _vocabulary() -> dict[str, tuple[str, ...]]:
    from planar3d import config

    return {name: value for name, value in vars(config).items()
            if name.isupper() and isinstance(value, tuple) and value and all(isinstance(v, str) for v in value)}


def test_every_choice_list_is_written_once_in_config():
    """No module but config.py spells out a choice list (a tuple or list of the same strings)."""
    vocabulary = {frozenset(v): name for name, v in _vocabulary().items()}
    # the split's values are also the result tables' column names (patient, centre)
    vocabulary.update({frozenset(v): f"CHOICES[{k!r}]" for k, v in __import__("planar3d.config").config.CHOICES.items()
                       if k != "split"})
    retyped = []
    for module, tree in MODULES.items():
        if module == "planar3d.config":
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) >= 2 and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                values = frozenset(e.value for e in node.elts)
                if values in vocabulary:
                    retyped.append(f"{module}:{node.lineno} retypes {vocabulary[values]}")
    assert not retyped, "\n".join(retyped)


def test_command_line_choices_come_from_the_vocabulary():
    from planar3d.cli.common import add_config_flags, add_launcher_flags, add_segment_flags, make_parser
    from planar3d.config import CHOICES, DEVICES, LAUNCHERS, RUNTIME_CHOICES

    parser = make_parser("x", "x")
    add_config_flags(parser)
    add_launcher_flags(parser)
    segment = make_parser("y", "y")
    add_segment_flags(segment)
    choices = {action.dest: tuple(action.choices) for p in (parser, segment) for action in p._actions if action.choices}
    expected = {**CHOICES, "launcher": LAUNCHERS, "device": DEVICES, "runtime": RUNTIME_CHOICES, "preset": choices["preset"]}
    assert choices == expected


def test_registry_backbones_are_the_vocabulary():
    from planar3d.config import BACKBONES, PAPER_MAPPINGS
    from planar3d.nets.backbones import BACKBONES as REGISTRY
    from planar3d.nets.mapping import MAPPINGS

    assert ("paper", *REGISTRY) == BACKBONES
    assert MAPPINGS == PAPER_MAPPINGS
