"""The HTML report opens in a real browser (headless Chromium) with every image decoded and not one console message.

Skipped where Chromium is not installed, unless LAYERDIFF_REQUIRE_BROWSER=1 (as CI sets it), which makes a missing
browser a failure.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES
from layerdiff.html import POLICY

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Reads, once the page has loaded, whether each image decoded; the report itself runs no script.
PROBE = (
    "<script>window.addEventListener('load', () => { document.body.dataset.images = "
    "[...document.images].map(i => i.complete && i.naturalWidth > 0).join(','); });</script>"
)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if found is None:
        if os.environ.get("LAYERDIFF_REQUIRE_BROWSER") == "1":
            pytest.fail("LAYERDIFF_REQUIRE_BROWSER=1 but no Chromium on PATH. Install it: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (CI sets LAYERDIFF_REQUIRE_BROWSER=1 to require it)")
    return found


def open_in_browser(chromium: str, page: Path) -> tuple[list[bool], list[str], str]:
    """Load ``page`` with the probe; returns whether each image decoded, the console messages, and the DOM."""
    probed = page.with_name(f"probed-{page.name}")
    text = page.read_text(encoding="utf-8").replace(POLICY, f"{POLICY}; script-src 'unsafe-inline'")
    probed.write_text(text.replace("</body>", f"{PROBE}</body>"), encoding="utf-8")
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    images = re.search(r'data-images="([^"]*)"', done.stdout)
    assert images is not None, "the page did not finish loading"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return [v == "true" for v in images.group(1).split(",") if v], console, done.stdout


def test_html_report_opens_in_chromium_without_console_errors(chromium, cli, tmp_path):
    code, _, _ = cli("run", FIXTURES / "bug_conv_padding_off_by_one.py", FIXTURES / "cnn_torch.py", "--html", "report.html")
    assert code == 1
    images, console, dom = open_in_browser(chromium, tmp_path / "report.html")
    assert console == []
    assert images == [True, True, True]
    assert "culprit conv1 (b: 0)" in dom


def test_the_browser_check_sees_a_console_error_and_a_blocked_request(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        f'<!doctype html><html><head><meta http-equiv="Content-Security-Policy" content="{POLICY}"></head><body>'
        '<img src="https://example.com/plot.png"><img src="data:image/png;base64,AAAA">'
        "<script>console.error('boom')</script></body></html>"
    )
    images, console, _ = open_in_browser(chromium, page)
    assert images == [False, False]
    assert any("violates the following Content Security Policy" in line for line in console)
    assert any('"boom"' in line for line in console)
