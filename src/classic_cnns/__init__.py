"""LeNet-5 and AlexNet as a Lightning + Hydra experiment project."""

import secrets

from omegaconf import OmegaConf


class ClassicCNNsError(Exception):
    """A problem the user can fix (missing data, bad value); reported without a traceback."""


# A short random id, cached like Hydra's ${now:}: run and sweep dirs stay unique even for
# jobs started in the same second, and every job of a sweep sees the same value.
OmegaConf.register_new_resolver("unique_id", lambda: secrets.token_hex(3), use_cache=True, replace=True)
