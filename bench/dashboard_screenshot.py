"""A screenshot of the Ray dashboard's Serve view with two tenants' apps, for the README.

Needs Chromium and Playwright's Python package (it drives the system Chromium; no browser
download):  apt-get install chromium && pip install playwright
    python bench/dashboard_screenshot.py [--out docs/dashboard-serve.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import BENCH, local_platform, platform

ROOT = BENCH.parent
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


def _ray_token() -> str:
    result = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard-serve.png"))
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Chromium is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with local_platform():
        for user in ("alice", "bob"):
            platform("users", "create", user)
        platform("deploy", str(ROOT / "examples/counter.py::Counter"), "--user", "alice", "--auth", "public")
        platform("deploy", str(ROOT / "examples/counter.py::Counter"), "--user", "bob", "--app-name", "greeter")
        platform("deploy", str(BENCH / "apps/echo.py::Echo"), "--user", "bob", "--auth", "shared")
        dashboard = json.loads((Path(os.environ["TENANTSERVE_HOME"]) / "cluster.json").read_text())["dashboard_url"]
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            context = browser.new_context(viewport={"width": 1500, "height": 900})
            # The dashboard of a token-auth cluster reads the token from this cookie.
            context.add_cookies([{"name": "ray-authentication-token", "value": _ray_token(), "url": dashboard}])
            page = context.new_page()
            page.goto(f"{dashboard}/#/serve")
            for name in ("alice.counter", "bob.greeter", "bob.echo"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
