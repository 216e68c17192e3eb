"""The audit report in a real browser: headless Chromium loads it with no console errors, no
broken images and no table wider than a 1,300 px window, and a screenshot is taken (kept in
the test's temporary folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import CHROMIUM_FLAGS, chromium, overflowing_tables
from medfool.cli.main import main


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tiny_model: Path, tiny_config: Path, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    browser_path = chromium()
    out = tmp_path / "out"
    assert main(["audit", "-m", str(tiny_model), "-d", "synthetic", "--config", str(tiny_config),
                 "--out", str(out)]) == 0
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto((out / "report.html").resolve().as_uri(), wait_until="load")
            too_wide = overflowing_tables(page)  # the attack table was 1,200 px in 1,100 (before its split)
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            findings = page.locator("#findings + ul li").count()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert too_wide == []
    assert len(images) >= 6
    broken = [alt for alt, complete, width in images if not complete or width == 0]
    assert broken == []
    for h in ("Findings", "Threat model", "Clean performance", "Attacks", "Clinical flip matrix", "Examples",
              "Patch", "One-pixel vulnerability maps", "Sanity checks"):
        assert h in headings
    assert findings >= 6
    import numpy as np
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width >= 1000 and im.height > 2000  # the whole page, not a blank viewport
        assert len(np.unique(np.asarray(im.convert("L").resize((64, 256))))) > 20  # not blank


DEFENDED_CONFIG = """\
n = 16
[corruptions]
enabled = false
[whitebox]
attacks = []
minimal = []
eps = [64]
[blackbox]
enabled = false
[patch]
enabled = false
[onepixel]
enabled = false
[maps]
enabled = false
[defence]
names = ["median"]
eps = [64]
eot = 2
"""


@pytest.mark.slow
def test_defended_model_report_shows_naive_and_adaptive_side_by_side(tiny_model: Path, tmp_path: Path):
    """Audit a model defended by bit-depth reduction (plus a median filter from the config): the
    report's defence section has, per defence, the naive, masking-check and adaptive columns
    with numbers, and the adaptive figure is never above the naive one."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    browser_path = chromium()
    defended = tmp_path / "defended.safetensors"
    assert main(["defend", "transform", "-m", str(tiny_model), "-t", "bit-depth:bits=3", "-o", str(defended)]) == 0
    config = tmp_path / "audit.toml"
    config.write_text(DEFENDED_CONFIG)
    out = tmp_path / "out"
    assert main(["audit", "-m", str(defended), "-d", "synthetic", "--config", str(config), "--out", str(out)]) == 0
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto((out / "report.html").resolve().as_uri(), wait_until="load")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            sanity = page.evaluate("""(() => { let t = document.getElementById('sanity').nextElementSibling;
                return Array.from(t.querySelectorAll('tr')).slice(1).map(r => r.cells[0].textContent); })()""")
            attacks = page.evaluate("""(() => { let t = document.getElementById('attacks');
                while (t && t.tagName !== 'TABLE') t = t.nextElementSibling;
                return Array.from(t.querySelectorAll('tr')).map(
                    r => Array.from(r.cells).map(c => c.textContent)); })()""")
            tables = page.evaluate("""Array.from(document.querySelectorAll('#defences ~ h3')).map(h => {
                let t = h.nextElementSibling; while (t && t.tagName !== 'TABLE') t = t.nextElementSibling;
                return [h.textContent, Array.from(t.querySelectorAll('th')).map(c => c.textContent),
                        Array.from(t.querySelectorAll('tbody tr td')).map(c => c.textContent)];})""")
        finally:
            browser.close()
    assert problems == []
    assert "Defences: the naive and the adaptive attacker" in headings
    names = [t[0] for t in tables]
    assert any(n.startswith("the audited model") for n in names) and any(n.startswith("median") for n in names)
    figures = {}
    for name, head, cells in tables:
        assert head == ["budget", "naive", "masking check", "adaptive", "undefended"]
        assert cells[0] == "64/255"
        naive, masked, adaptive = (float(c.split()[0]) for c in cells[1:4])
        assert adaptive <= min(naive, masked)
        figures[name.split(" (")[0]] = adaptive
    # the audited model is defended: its headline (the white-box ensemble's row, the worst case of
    # the naive and the adaptive attacker per image) is its adaptive figure, not the naive one
    head = attacks[0]
    ensemble = next(r for r in attacks[1:] if any(c.startswith("ensemble") for c in r) and "64/255" in r)
    robust = float(ensemble[next(i for i, h in enumerate(head) if h.startswith("robust"))].split()[0])
    assert robust == figures["the audited model"]
    # and the sanity section lists each defended model's own gradient-masking checks
    for name in ("the audited model", "median"):
        assert any(c.startswith(f"{name}: non-zero gradients") for c in sanity), sanity
