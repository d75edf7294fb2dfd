"""Headless Chromium for the browser tests: Debian's `chromium` driven by Playwright's Python API.

No browser is downloaded (`playwright install` is never run): Playwright launches the system's
executable (CHROMIUM_PATH, default /usr/bin/chromium). Without it the tests skip, except in CI
(CI=true), where a missing browser fails the run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import IN_CI

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium; CI installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def screenshot_dir(tmp_path: Path) -> Path:
    """SCREENSHOT_DIR (e.g. docs/screenshots, to refresh the README's images) or the test's temp dir."""
    configured = os.environ.get("SCREENSHOT_DIR")
    path = Path(configured) if configured else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path
