"""LeNet-5 and AlexNet as a Lightning + Hydra experiment project."""


class ClassicCNNsError(Exception):
    """A problem the user can fix (missing data, bad value); reported without a traceback."""
