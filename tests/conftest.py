"""Shared test settings: programs a test needs are either present or the test says why not."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def not_here(reason: str) -> NoReturn:
    """Skip a test that this machine cannot run; under CI=true, fail it: CI must run them all."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require_program(name: str) -> str:
    """The path of `name`; skips the test if it is missing, fails it under CI=true."""
    path = shutil.which(name)
    if path is None:
        not_here(f"{name} is not installed (`.ci/run` installs it)")
    return path
