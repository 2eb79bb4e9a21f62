"""Shared test settings: programs a test needs are either present or the test says why not."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def require_program(name: str) -> str:
    """The path of `name`; skips the test if it is missing, fails it under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (`.ci/run` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
