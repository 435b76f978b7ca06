"""Headless Chromium for the HTML reports, shared by ``tests/test_html_browser.py`` (tiny pages)
and ``benchmarks/report_pages_real.py`` (pages of real scans), so that both open and judge a page
the same way. Chromium and its driver come from the distribution (``apt-get install chromium
chromium-driver``), Selenium from the ``test`` extra.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

#: The switches of the headless browser: no GPU, no sandbox (containers), no network of its own.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1500")

#: A reference to anything outside the page in its source (a script, a style, a picture, a font).
EXTERNAL = re.compile(r"""(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:|ftp:|//)|url\(\s*["']?\s*(?:https?:|//)"""
                      r"""|@import""", re.I)


#: URL schemes that never leave the machine: the page's own files, inline data, and the browser's
#: own resources (a fresh profile's new-tab page asks for chrome:// files while the first page loads).
LOCAL = ("file:", "data:", "chrome:", "about:")


def missing_tools() -> list[str]:
    """What the browser check lacks on this machine, each with how to install it."""
    missing = [f"{name} (apt-get install -y chromium chromium-driver)" for name in ("chromium", "chromedriver")
               if shutil.which(name) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium; it is in the test extra)")
    return missing


def open_chromium(profile: Path):
    """A headless Chromium (Selenium driver) with its console and network logs kept, its profile
    in ``profile``. The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def _requests(browser) -> list[str]:
    """URLs the page asked the network stack for (Chrome DevTools' Network.requestWillBeSent)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def page_problems(browser, path: Path) -> list[str]:
    """Load ``path`` (a ``file://`` URL) and return what a reader would find broken, one phrase
    each (empty when nothing): console errors, pictures that did not decode, requests to URLs that
    are not :data:`LOCAL` (network log and resource timing), outside references in the source."""
    browser.get_log("browser")
    browser.get_log("performance")  # start both logs afresh
    browser.get(path.as_uri())
    problems = []
    if browser.execute_script("return document.readyState") != "complete":
        problems.append("the page did not finish loading")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    if errors:
        problems.append(f"console errors {errors}")
    pictures = browser.execute_script("return Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt])")
    broken = [alt for complete, width, alt in pictures if not complete or width == 0]
    if broken:
        problems.append(f"pictures that did not decode: {broken}")
    outside = [url for url in _requests(browser) if not url.startswith(LOCAL)]
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside += [url for url in resources if not url.startswith(LOCAL)]
    if outside:
        problems.append(f"requests outside the page: {outside}")
    match = EXTERNAL.search(path.read_text(encoding="utf-8"))
    if match:
        problems.append(f"outside reference in the source: {match.group(0)}")
    return problems


def sortable_table_rows(browser) -> list[list[int]]:
    """``[header rows, body rows]`` of each sortable table of the loaded page, in page order."""
    return browser.execute_script("return Array.from(document.querySelectorAll('table.sortable'), "
                                  "t => [t.tHead.rows.length, t.tBodies[0].rows.length])")
