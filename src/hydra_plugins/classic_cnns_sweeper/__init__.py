"""classic-cnns' Hydra sweeper plugin (see checked_sweeper.py)."""
