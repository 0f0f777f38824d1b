"""LeNet-5 and AlexNet as a Lightning + Hydra experiment project."""

import os
from pathlib import Path


class ClassicCNNsError(Exception):
    """A problem the user can fix (missing data, bad value); reported without a traceback."""


# Where the project's code is called from on its way from the user's script: a warning names
# the first caller outside them (the user's train.py, test or notebook), not Hydra's internals.
_CALLERS_IN_BETWEEN = ("classic_cnns", "hydra", "omegaconf", "lightning", "lightning_fabric", "torch")


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """warnings.warn, attributed to the first frame outside this project and the libraries
    between it and the user (a fixed stacklevel lands in whichever of them called)."""
    import sys
    import warnings

    folders = tuple(
        str(Path(module.__file__).parent) + os.sep
        for name in _CALLERS_IN_BETWEEN
        if (module := sys.modules.get(name)) is not None and getattr(module, "__file__", None)
    )
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(folders):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (another user's counts): a file a
    dead writer left behind may be removed, a live writer's may not."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # a number no process can have: not alive
        return False
    except PermissionError:
        return True
    return True
