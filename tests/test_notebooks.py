"""The notebooks: committed executed (results and plots visible on GitHub and Colab), rebuilt by
notebooks/build.py, which the suite runs in quick mode on a real Jupyter kernel, as Colab would."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_the_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_pruning_and_qat_callbacks.ipynb",
        "02_distillation.ipynb",
        "03_int8_tflite_micro.ipynb",
    ]


def _outputs(notebook) -> list[dict]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def _check_notebook(notebook, name: str) -> None:
    """Installs itself on Colab, links to Colab, every code cell ran without error, and a plot is shown."""
    assert f"]({build.colab_url(name)})" in notebook.cells[0].source.splitlines()[0], "an Open in Colab link on top"
    assert build.colab_url(name).startswith("https://colab.research.google.com/github/")
    install = notebook.cells[1].source
    assert "pip" in install and 'find_spec("tfedge")' in install and "TFEDGE_SOURCE" in install
    assert f'"git+https://github.com/{build.REPOSITORY}"' in install, "installs from the repository the link names"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), "every code cell was executed"
    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs), (
        "each notebook shows at least one plot"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_are_executed_with_their_outputs(path):
    _check_notebook(nbformat.read(path, as_version=4), path.name)


@pytest.mark.slow
def test_build_script_runs_every_notebook_quick(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / "build.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        _check_notebook(nbformat.read(tmp_path / path.name, as_version=4), path.name)
