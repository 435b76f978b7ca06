"""The notebooks in ``notebooks/``: committed without outputs, and executed at tiny size.

Each notebook's first code cell is tagged ``parameters`` (papermill style) and holds plain
assignments; the tests replace it by the tiny values below and run the notebook in a fresh
kernel with nbclient. The notebooks check their own results with ``assert`` (a failing check
fails the cell, which fails the test).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

#: notebook -> parameters of a tiny run (every parameter of the notebook's parameter cell).
TINY: dict[str, dict] = {
    "01_planar_weight_mapping.ipynb": {"WEIGHTS": "imagenet", "SIZE": 32, "WINDOW": 16, "SEED": 0},
    "02_data_windows_recomposition.ipynb": {
        "SIZE": 32, "WINDOW": 16, "STRIDE": 8, "PHANTOM_SCALE": 0.1, "PATIENT": 0,
    },
    "03_train_evaluate.ipynb": {
        "PRESET": "demo", "SIZE": 32, "EPOCHS": 1, "FOLD": 2, "DATA": None,
        "PHANTOM_N_PER_CENTRE": 3, "PHANTOM_SCALE": None, "OUT_DIR": "<tmp>", "N_SLICES": 3,
    },
    "04_backbones_and_classification.ipynb": {
        "BACKBONE": "vgg16", "MAPPING": "planar", "WEIGHTS": "none", "SIZE": 32, "EPOCHS": 1, "FOLD": 1,
        "PHANTOM_N_PER_CENTRE": 3, "OUT_DIR": "<tmp>",
    },
}
#: notebook -> (least number of PNG figures, texts its outputs must contain).
EXPECTED: dict[str, tuple[int, tuple[str, ...]]] = {
    "01_planar_weight_mapping.ipynb": (
        3, ("planar 3D convolution == 2D convolution slice by slice", "block1 of the 3D model vs VGG16"),
    ),
    "02_data_windows_recomposition.ipynb": (
        7, ("recompose(extract_windows(volume), mode='gaussian') == volume: exact",
            "predict_volume(identity, mode='middle', tta=True) == volume: exact"),
    ),
    "03_train_evaluate.ipynb": (5, ("mean ± std", "overall")),
    "04_backbones_and_classification.ipynb": (
        3, ("planar 3D VGG16 == 2D VGG16 slice by slice: exact", "predict's CSV == the fold's test probabilities"),
    ),
}
NEEDS_WEIGHTS = {"01_planar_weight_mapping.ipynb", "03_train_evaluate.ipynb"}


def _parameter_cell(notebook):
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells, "notebook without code cells"
    first = code_cells[0]
    assert "parameters" in first.metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    return first


def _assigned_names(source: str) -> list[str]:
    """Names assigned by a parameter cell, which must hold nothing but ``NAME = value`` lines."""
    names = []
    for statement in ast.parse(source).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1, ast.unparse(statement)
        target = statement.targets[0]
        assert isinstance(target, ast.Name), ast.unparse(statement)
        names.append(target.id)
    return names


def _outputs(notebook) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def test_every_notebook_is_covered():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == sorted(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_committed_notebook_is_stripped_and_parametrised(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"outputs left in cell {cell.id}"
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    # the tiny run must set every parameter, so a renamed one cannot silently run at full size
    assert sorted(_assigned_names(_parameter_cell(notebook).source)) == sorted(TINY[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs_at_tiny_size(name, tmp_path, monkeypatch, request):
    # the kernel inherits this process's environment: a private phantom/cache folder, the weights
    monkeypatch.setenv("PLANAR3D_HOME", str(tmp_path / "home"))
    if name in NEEDS_WEIGHTS:
        monkeypatch.setenv("PLANAR3D_VGG16_WEIGHTS", str(request.getfixturevalue("vgg16_weights_path")))
    parameters = dict(TINY[name])
    if "OUT_DIR" in parameters:
        parameters["OUT_DIR"] = str(tmp_path / "run")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    _parameter_cell(notebook).source = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())

    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on any failing cell, asserts included

    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    least_figures, snippets = EXPECTED[name]
    assert figures >= least_figures, f"{figures} figures"
    for snippet in snippets:
        assert snippet in text
    if "OUT_DIR" in parameters:
        fold_dir = Path(parameters["OUT_DIR"]) / f"fold_{parameters['FOLD']}"
        for produced in ("log.csv", "best.keras", "metrics.csv", "done.json"):
            assert (fold_dir / produced).is_file(), produced
