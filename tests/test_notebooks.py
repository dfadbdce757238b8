"""The notebooks in examples/: each runs top to bottom in a Jupyter kernel with a few seconds of
training (the value CI gives the `parameters` cell's BUDGET), and each is saved with the outputs
of a real run, whose model card renders in headless Chromium (with TEXTGEN_UPDATE_SCREENSHOTS=1
the screenshot goes to docs/images/model-card.png)."""

from __future__ import annotations

import glob
import html
import os
import shutil

import nbformat
import pytest
from helpers import REPO, missing

EXAMPLES = REPO / "examples"
# What the notebooks read from Debian packages (.ci/run installs them).
SYSTEM_PARTS = {"your_own_text": ("/usr/share/vim/vim*/tutor/tutor.ru.utf-8", "apt-get install vim-runtime"),
                "demos": ("/usr/share/datasets/fashion-mnist", "apt-get install dataset-fashion-mnist")}
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# A few seconds of training, and validation on 20,000 characters instead of Shakespeare's 500,000.
CI_PARAMETERS = "BUDGET = 5\nEVAL_CHARS = 20_000"


def tagged(cell, tag: str) -> bool:
    return tag in cell.metadata.get("tags", [])


def with_parameters(notebook, source: str):
    """`notebook` with `source` run right after its parameters cell, in place of any saved override
    (papermill's convention: the override is a cell tagged injected-parameters)."""
    cells = [c for c in notebook.cells if not tagged(c, "injected-parameters")]
    at = next(i for i, c in enumerate(cells) if tagged(c, "parameters")) + 1
    injected = nbformat.v4.new_code_cell(source)
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells = cells[:at] + [injected] + cells[at:]
    return notebook


def test_there_are_the_four_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["demos.ipynb", "looking_inside.ipynb", "quick_start.ipynb",
                                           "your_own_text.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_installs_on_colab_only_and_takes_a_budget(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert '"google.colab" in sys.modules' in code[0].source and "pip" in code[0].source
    assert code[0].outputs == []  # outside Colab the install cell does nothing
    parameters = [c for c in code if tagged(c, "parameters")]
    assert len(parameters) == 1 and parameters[0].source.startswith("BUDGET = 120")
    assert any("GPU" in c.source for c in notebook.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_saved_with_the_outputs_of_one_real_run(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # one run, top to bottom
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    injected = [c.source for c in code if tagged(c, "injected-parameters")]
    assert len(injected) == 1 and "BUDGET = 60" in injected[0]  # the budget its markdown names
    assert "BUDGET = 60" in notebook.cells[0].source
    after_parameters = code[[tagged(c, "injected-parameters") for c in code].index(True) + 1:]
    assert all(c.outputs for c in after_parameters), "every cell after the parameters shows its result"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless_with_a_small_budget(path, tmp_path):
    """Every cell runs without error in a kernel of this Python, in a folder of its own
    (the autouse fixture's checkpoints and cache directories reach the kernel's environment)."""
    from nbclient import NotebookClient

    if path.stem in SYSTEM_PARTS and not glob.glob(SYSTEM_PARTS[path.stem][0]):
        missing(*SYSTEM_PARTS[path.stem])
    notebook = with_parameters(nbformat.read(path, as_version=4), CI_PARAMETERS)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    cards = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "text/html" in o.get("data", {})]
    assert cards or path.stem == "demos"  # the Run, Model or shaded-sample card


def saved_card(name: str, title: str) -> str:
    """The HTML of the first card titled `title` among a saved notebook's outputs."""
    notebook = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            card = output.get("data", {}).get("text/html", "")
            if f"<b>{html.escape(title)}" in card:
                return card
    raise AssertionError(f"no {title} card in {name}.ipynb")


@pytest.mark.slow
def test_quick_start_model_card_renders(browser, tmp_path):
    """The quick start's saved Model card in Chromium: its figures, the validation curve, the sample."""
    card = saved_card("quick_start", "textgen.Model")
    page = browser.new_page(viewport={"width": 720, "height": 400}, device_scale_factor=2)
    page.set_content('<!doctype html><html><head><meta charset="utf-8"></head>'
                     f'<body style="margin:0;background:#fff"><div id="output" style="display:inline-block;'
                     f'padding:16px">{card}</div></body></html>')
    curve = page.locator(".textgen-card svg polyline").bounding_box()
    assert curve is not None and curve["width"] > 100 and curve["height"] > 10
    shown = page.locator(".textgen-card").inner_text()
    assert "val bpc" in shown and "parameters" in shown and "shakespeare" in shown
    path = tmp_path / "model-card.png"
    page.locator("#output").screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("TEXTGEN_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, REPO / "docs" / "images" / "model-card.png")
    page.close()
