"""What a test does when shared data or a service it needs is missing: skip on a developer's machine, fail in CI."""

import os

import pytest


def skip_or_fail(reason: str) -> None:
    """Skip with reason; when CI is set, fail instead, so a CI run cannot pass by testing less."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: missing shared data or services fail there instead of skipping)")
    pytest.skip(reason)
