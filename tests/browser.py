"""Headless Chromium for the report tests: where it is and how it is started (the machine's
closed network refuses Chromium's background connections, so they are switched off)."""

from __future__ import annotations

import shutil
from typing import Any

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


# every table against the content box of the element holding it, and the page against the window
OVERFLOWING_TABLES = """() => {
    const out = [];
    for (const t of document.querySelectorAll('table')) {
        const box = t.parentElement, cs = getComputedStyle(box);
        const room = box.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
        let h = t.previousElementSibling;
        while (h && !/^H[1-4]$/.test(h.tagName)) h = h.previousElementSibling;
        if (t.scrollWidth > room + 1) out.push([h ? h.textContent : '', t.scrollWidth, Math.round(room)]);
    }
    const doc = document.documentElement;
    if (doc.scrollWidth > doc.clientWidth) out.push(['the page', doc.scrollWidth, doc.clientWidth]);
    return out;
}"""


def overflowing_tables(page: Any) -> list[list[Any]]:
    """[heading above it, its width, the room it has] for every table of a loaded Playwright page
    wider than the element holding it, and the page itself where it is wider than the window."""
    return list(page.evaluate(OVERFLOWING_TABLES))
