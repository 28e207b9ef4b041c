"""The one rule for a test that needs a part outside Python's reach (a system program, an optional
server package): `require(part, available, how)`.

Missing on a developer's machine, the test skips, saying what is missing and how to install it. With
CI=true in the environment (`make test` and `make test-integration` set it, as CI services do) the
test fails instead with the same words: a CI run that quietly skipped the S3, Redis or browser
tests would report green without having tested them.
"""

from __future__ import annotations

import os

import pytest

INSTALL_SYSTEM_PACKAGES = "run scripts/install_system_packages.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(part: str, available: bool, how: str) -> None:
    """Skip (or, under CI=true, fail) the calling test when `part` is not `available`; `how` says how
    to install it."""
    __tracebackhide__ = True  # pytest reports the test's line, not this one
    if available:
        return
    message = f"{part} is missing: {how}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing part fails the run instead of skipping)", pytrace=False)
    pytest.skip(message)
