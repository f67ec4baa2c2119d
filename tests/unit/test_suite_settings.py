"""The suite's own promises about itself."""

from __future__ import annotations

from hypothesis import settings


def test_every_property_test_runs_the_same_examples_each_time():
    assert settings.default.derandomize is True
