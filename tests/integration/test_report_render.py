"""`aisle report`: the HTML from a small stream world (tests/ops_world.py) has every section, its
plots embedded, no external reference, and renders in headless Chromium to a page that is not blank.

Chromium comes from Debian's `chromium` package (scripts/install_system_packages.sh, run by `make test`);
without it the rendering test skips and says so.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest
from ops_world import World, build_world
from parts import INSTALL_SYSTEM_PACKAGES, require

from aisle.cli import main as cli_main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SECTIONS = ("Aisle stream report", "Summary", "Click-through and conversion over time",
            "Updates: the gate's scores before and after", "Serving latency", "Screened and dropped events")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("stream"))


@pytest.fixture(scope="module")
def report(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert cli_main(["report", *world.overrides(out=str(out))]) == 0
    return out


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_report_has_every_section_and_the_numbers(world, report):
    page = report.read_text(encoding="utf-8")
    text = _text(page)
    for heading in SECTIONS:
        assert f">{heading}</h" in page.replace("&#x27;", "'"), heading
    assert "relevance v4 val_ndcg@10 0.9012 4 2 1 1" in text  # CURRENT, key metric, versions, promoted/rejected/other
    assert "sentiment v2 val_macro_f1 0.5790 2" in text
    assert len(re.findall(r'class="badge"', page)) == 4  # one per audited decision
    assert "original 0.8699 → 0.8370 (-0.0329)" in text.replace("&rarr;", "→")
    assert "FileNotFoundError: artifacts/prepared/relevance/val" in text
    # /v1/search latency, hand-computed from the fixture's buckets: p50 = 75 + 25 * 86/210, p95 = 150 + 100 * 11/30
    assert "/v1/search relevance 500 85.2 186.7" in text
    assert f"{world.flagged:,} of {world.events:,} logged events" in text
    assert "duplicate 12" in text and "rejected 3" in text


def test_report_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 3  # rates, gate, latency
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert all(r.startswith("data:") for r in references), [r for r in references if not r.startswith("data:")]
    for external in ("<script", "<link", "<iframe", "@import", "url(", "http://", "https://"):
        assert external not in page, external


def test_report_without_metrics_or_events_says_so(tmp_path, world):
    out = tmp_path / "bare.html"
    assert cli_main(["report", *world.overrides(out=str(out), metrics_file="", log_dir=str(tmp_path / "none"))]) == 0
    text = _text(out.read_text(encoding="utf-8"))
    assert "No latency data: no metrics source configured" in text
    assert "No events in the feedback log" in text
    assert "Updates: the gate" in text  # the audit log is still there


def test_report_renders_in_headless_chromium(report, tmp_path):
    require("chromium", CHROMIUM is not None, f"{INSTALL_SYSTEM_PACKAGES} (apt-get install chromium) to render the report")
    import matplotlib.image

    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
                    report.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels.std() > 0.05  # a blank page has none
    ink = (pixels.mean(axis=2) < 0.85).mean(axis=1)  # share of darker pixels per row
    assert (ink[:400] > 0.01).any() and (ink[1000:2400] > 0.01).sum() > 300  # header text, and the charts below
    colours = np.unique((pixels[::4, ::4] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # charts and badges, not just black text on white
