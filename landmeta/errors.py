"""Typed errors raised by the library; the CLI turns each into one line and a non-zero exit."""

from __future__ import annotations


class LandmetaError(Exception):
    """Base of every error the library raises on purpose (bad input, bad config, bad state)."""


class ConfigError(LandmetaError):
    """A configuration file or override is malformed: unknown key, wrong type, bad value."""


class DataError(LandmetaError):
    """An input file or folder is missing, corrupt, or not in the expected format."""


class StoreError(LandmetaError):
    """A chip store is missing, incomplete, or inconsistent with what is asked of it."""


class TaskError(LandmetaError):
    """Few-shot tasks cannot be drawn as asked (too few classes, samples or regions)."""


class CheckpointError(LandmetaError):
    """A checkpoint is missing, corrupt, or belongs to another model, band set or method."""


class ModelError(LandmetaError):
    """A model cannot be built or does not fit the data it is given."""


class TrainingError(LandmetaError):
    """Training cannot go on (a NaN or infinite loss, a diverged run)."""


class OutputExistsError(LandmetaError):
    """An output folder exists and is not empty, and overwriting was not asked for."""


class OutputBusyError(LandmetaError):
    """Another process is writing the same output (its write lock is held)."""


class LandmetaWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints one line)."""
