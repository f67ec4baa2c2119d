"""`make render-email`: the designers' preview, as HTML and text, and as a PNG when Chromium is there."""

from __future__ import annotations

import os
import stat
import sys

from tests.support import run_module

# Stands in for Chromium: writes the file --screenshot names, and records what it was asked to open.
FAKE_BROWSER = f"""#!{sys.executable}
import sys
args = sys.argv[1:]
shot = next(a.split("=", 1)[1] for a in args if a.startswith("--screenshot="))
assert "--headless" in args and args[-1].startswith("file://"), args
open(shot, "wb").write(b"PNG of " + args[-1].encode())
"""


async def test_a_preview_shows_a_sample_tenants_branding_and_is_photographed_when_chromium_is_there(tmp_path):
    browser = tmp_path / "bin" / "chromium"
    browser.parent.mkdir()
    browser.write_text(FAKE_BROWSER)
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "payment_failed.html"
    code, printed = await run_module("notifier", "render", "payment_failed", "--out", str(out),
                                     env={"PATH": f"{browser.parent}{os.pathsep}{os.environ['PATH']}"})
    assert code == 0, printed
    assert "background: #0f766e" in out.read_text() and "Shree Packaging" in out.with_suffix(".txt").read_text()
    assert out.with_suffix(".png").read_bytes() == b"PNG of " + out.resolve().as_uri().encode()


async def test_without_chromium_the_preview_says_so_and_a_tenant_without_a_profile_has_the_house_look(tmp_path):
    out = tmp_path / "payment_failed.html"
    code, printed = await run_module("notifier", "render", "payment_failed", "--out", str(out), "--tenant", "none",
                                     env={"PATH": os.path.dirname(sys.executable)})
    assert code == 0, printed
    assert "no Chromium on PATH" in printed and not out.with_suffix(".png").exists()
    assert "#8a5a2b" in out.read_text() and "Please do not reply" in out.with_suffix(".txt").read_text()
    code, printed = await run_module("notifier", "render", "payment_failed", "--tenant", "globex")
    assert code == 2 and "unknown sample tenant 'globex'" in printed
