"""The public API: `import budgetseg` is light (no torch), and every name of __all__ is there, documented."""

from __future__ import annotations

import inspect
import subprocess
import sys

import budgetseg


def test_import_budgetseg_imports_no_torch():
    code = "import sys, budgetseg; assert not {'torch', 'numpy'} & set(sys.modules); print(budgetseg.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == budgetseg.__version__


def test_every_public_name_is_there_and_documented():
    assert set(budgetseg.__all__) == {
        "__version__",
        "run",
        "sweep",
        "select",
        "predict",
        "export",
        "advise",
        "load_model",
    }
    for name in budgetseg.__all__:
        obj = getattr(budgetseg, name)
        if name != "__version__":
            assert callable(obj) and inspect.getdoc(obj), name
    assert set(budgetseg.__all__) <= set(dir(budgetseg))


def test_api_names_are_not_shadowed_by_modules():
    """budgetseg.export stays the function after its module is imported (the modules live in loop/, experiments/)."""
    import budgetseg.experiments.sweep  # noqa: F401
    import budgetseg.loop.export  # noqa: F401

    assert inspect.isfunction(budgetseg.export) and inspect.isfunction(budgetseg.sweep)
