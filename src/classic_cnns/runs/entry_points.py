"""What the helper scripts share: they write no Hydra run dir and report user errors in one line."""

import sys
from contextlib import contextmanager

from classic_cnns import ClassicCNNsError

NO_RUN_DIR = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


@contextmanager
def exit_on_user_error():
    """A ClassicCNNsError (missing data, bad checkpoint, ...) ends the script with its message, exit 1."""
    try:
        yield
    except ClassicCNNsError as error:
        sys.exit(f"error: {error}")
