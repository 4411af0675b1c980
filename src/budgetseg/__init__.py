"""budgetseg: budget-aware semi-supervised semantic and instance segmentation.

The public API (each imported on first use, so that `import budgetseg` stays light and imports no torch):

    run(config, out)            the pipeline: f_theta -> pseudo-labels -> g_phi -> evaluation, into a run folder
    sweep(config, out, ns)      the pipeline for several N and the fully-supervised reference, then a report
    select(images, n)           which images of a folder to label first
    predict(model, inputs, out) a trained network's label maps (or instances) and overlays of image files
    export(run, to, out)        a run's labels and pseudo-labels for correction in CVAT, Label Studio, COCO or HTML
    advise(sources, budget)     learning curves from finished runs: what a budget buys with each strategy
    load_model(source)          a trained network in memory: image array in, label map or instances out

Each is what one `budgetseg` command does (budgetseg.api has their signatures); the command line is budgetseg.cli.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["__version__", "advise", "export", "load_model", "predict", "run", "select", "sweep"]

if TYPE_CHECKING:
    from budgetseg.api import advise, export, load_model, predict, run, select, sweep


def __getattr__(name: str):
    if name in __all__:  # the API, from budgetseg.api on first use (it imports torch)
        from budgetseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'budgetseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
