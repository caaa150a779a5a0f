"""A real headless browser for the tests that need one (Chromium through Selenium).

`chrome()` starts Debian's chromium with its chromium-driver (scripts/test installs both when
it runs as root). Where there is no browser the test is skipped, except in CI (env CI set),
where a missing browser fails the test: CI must exercise the pages for real.
"""

from __future__ import annotations

import os
import shutil

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _missing(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"no headless browser in CI: {why}")
    pytest.skip(why)


def chrome(width: int = 1280, height: int = 1800):
    """A headless Chromium WebDriver; quit it when done."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _missing("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as exc:  # noqa: BLE001 - a browser that will not start is a missing browser
        _missing(f"chromium did not start: {str(exc)[:300]}")
