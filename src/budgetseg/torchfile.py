"""Reading torch files that may come from anyone (run folders, model files and encoder weights passed between
colleagues): only tensors, numbers, strings, None and containers of them load; a pickled object that would run
code on loading is refused. Everything budgetseg saves stays within that set."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from budgetseg.errors import first_line, input_error


def load_torch_file(path: str | Path, what: str, map_location: str | torch.device = "cpu") -> object:
    """The object saved in `path` (torch.load with weights_only=True). One-line errors naming the file: `what`
    (e.g. "a budgetseg model file") says what it should have been."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err):  # a class or function to call: torch's advice (weights_only=False) would run it
            raise input_error(
                path,
                f"not loaded: it holds Python objects besides tensors, numbers and strings, and loading them could run "
                f"code ({what} holds none)",
            ) from None
        raise input_error(path, f"cannot read as {what} ({DAMAGED})") from None
    except (MemoryError, torch.cuda.OutOfMemoryError):  # no fault of the file's: the device's memory
        raise
    except OSError as err:  # the file system's reason (permissions, a folder): the user can act on it
        raise input_error(path, f"cannot read as {what} ({err.strerror or first_line(err)})") from None
    except Exception:  # torch raises many types (RuntimeError, EOFError, KeyError, ...) on damaged files, whose
        # messages ("101", "pop from empty list", an assertion in its zip reader) tell a user nothing
        raise input_error(path, f"cannot read as {what} ({DAMAGED})") from None


DAMAGED = "not a torch file, or a damaged one: cut short in a copy or download?"
