"""tests/parts.require: a missing part skips a test on a developer's machine and fails it under CI=true."""

from __future__ import annotations

import pytest
from parts import require


def test_an_available_part_does_nothing(monkeypatch):
    monkeypatch.setenv("CI", "true")
    require("redis-server", True, "apt-get install redis-server")


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_a_missing_part_skips_outside_ci_saying_what_and_how(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"^chromium is missing: run scripts/install_system_packages\.sh$"):
        require("chromium", False, "run scripts/install_system_packages.sh")


@pytest.mark.parametrize("ci", ["true", "TRUE", "1", "yes"])
def test_a_missing_part_fails_under_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"^moto is missing: pip install moto \(CI=true: .*fails the run"):
        require("moto", False, "pip install moto")
