"""Shared test helpers: where the real PASCAL data lives, if pulled."""

from pathlib import Path

import pytest
from missing import skip_or_fail

REPO_ROOT = Path(__file__).resolve().parents[1]
PASCAL_ROOT = REPO_ROOT / "data" / "raw" / "pascal"


@pytest.fixture
def pascal_root() -> Path:
    """The pulled PASCAL data (`dvc pull`); tests that need it skip without it (fail in CI)."""
    if not (PASCAL_ROOT / "set_b").is_dir():
        skip_or_fail("PASCAL data not pulled (run `dvc pull data/raw/pascal.dvc`)")
    return PASCAL_ROOT
