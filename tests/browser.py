"""Headless Chromium for the report tests: where it is and how it is started (the machine's
closed network refuses Chromium's background connections, so they are switched off)."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium() -> str:
    """The browser's path, or skip the test where there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")
