"""Headless Chromium for report tests (Debian packages chromium + chromium-driver)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (apt-get install chromium chromium-driver)"
)
# Console messages (CSP violations included) are logged as "CONSOLE"; script errors as "Uncaught".
CONSOLE_ERROR = re.compile(r"CONSOLE|Uncaught")


@dataclass
class Rendered:
    screenshot: Path
    dom: str
    log: str


def render(page: Path, tmp_path: Path, *, window: tuple[int, int] = (1280, 2400)) -> Rendered:
    """Screenshot and parsed DOM of a local HTML file; asserts Chromium exits cleanly."""
    screenshot = tmp_path / "shot.png"
    base = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
    ]
    environment = {**os.environ, "HOME": str(tmp_path)}
    shot = subprocess.run([*base, f"--screenshot={screenshot}", f"--window-size={window[0]},{window[1]}",
                           page.as_uri()], check=False, capture_output=True, text=True, timeout=90, env=environment)
    assert shot.returncode == 0, shot.stderr[-2000:]
    dump = subprocess.run([*base, "--dump-dom", page.as_uri()], check=False, capture_output=True, text=True,
                          timeout=90, env=environment)
    assert dump.returncode == 0, dump.stderr[-2000:]
    return Rendered(screenshot=screenshot, dom=dump.stdout, log=shot.stderr + dump.stderr)
