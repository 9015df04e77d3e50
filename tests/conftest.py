"""Shared fixtures: a tiny synthetic dataset, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from landmeta.synth import generate


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny generated dataset (sen12ms/, deepglobe/, synth.json), seed 0."""
    return generate(tmp_path_factory.mktemp("synth") / "tiny", scale="tiny", seed=0)
