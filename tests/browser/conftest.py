"""Headless Chromium through selenium and Debian's chromedriver (no download).

``scripts/ensure-browser.sh`` installs ``chromium`` and ``chromium-driver`` when they
are missing (``make test`` and ``.ci/run`` call it). ``browser()`` opens a new
headless window; every window is closed after the test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

Browser = Callable[..., webdriver.Chrome]


def _find(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(f"{names[0]} is required: run scripts/ensure-browser.sh")


@pytest.fixture
def browser() -> Iterator[Browser]:
    binary = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    opened: list[webdriver.Chrome] = []

    def open_window(width: int = 1280, height: int = 860) -> webdriver.Chrome:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        opened.append(driver)
        return driver

    yield open_window
    for driver in opened:
        driver.quit()
