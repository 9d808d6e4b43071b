"""Headless Chromium for the UI tests: the system's /usr/bin/chromium driven through /usr/bin/chromedriver by
Selenium 4, never a browser or driver that a tool downloads (Selenium Manager is not allowed to run).

Install both with ``make browser-deps`` (Debian packages ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

CHROMIUM = Path(os.environ.get("IMAGING_PIPELINES_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("IMAGING_PIPELINES_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=2400,1800",
)


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{path} not found (install the Debian package {package}: make browser-deps)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -c constraints.txt -e '.[dev]')"
    return None


def start_driver(page_load_timeout: float = 60.0):
    """A headless Chromium WebDriver on the system chromium + chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)

    def forbidden(*args, **kwargs):
        raise AssertionError("Selenium Manager must not run (it would download a browser or driver)")

    # An explicit driver path skips Selenium Manager; make sure of it.
    with mock.patch.object(SeleniumManager, "binary_paths", forbidden):
        driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(page_load_timeout)
    return driver


@contextmanager
def chromium():
    """``with chromium() as driver``: the driver is quit however the block ends."""
    driver = start_driver()
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver) -> str:
    """The page's rendered text, including text inside open dialogs and SVG foreignObjects."""
    return driver.execute_script("return document.body ? document.body.innerText : ''") or ""


def wait_for(driver, condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.5,
             message: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy; raise TimeoutError with ``message`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # a stale element while the page re-renders
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


def shown(needle: str, text: str) -> bool:
    """``needle`` is in ``text``, whole or as the UI elides long names in graph nodes: ``segmen…_evaluation``
    (a head and a tail of the name around an ellipsis, together at least 8 characters)."""
    if needle in text:
        return True
    for token in re.findall(r"\S*\u2026\S*", text):
        head, _, tail = token.partition("\u2026")
        if len(head) + len(tail) >= 8 and needle.startswith(head) and needle.endswith(tail):
            return True
    return False


def wait_for_text(driver, needles: list[str], timeout: float = 60.0) -> str:
    """Wait until every string of ``needles`` is shown in the page text (see :func:`shown`); returns that
    text. On timeout raises AssertionError naming the missing strings."""
    text = ""

    def ready():
        nonlocal text
        text = page_text(driver)
        return all(shown(n, text) for n in needles)

    try:
        wait_for(driver, ready, timeout=timeout, message=f"{needles}")
    except TimeoutError:
        missing = [n for n in needles if not shown(n, text)]
        raise AssertionError(f"{driver.current_url}: not shown after {timeout:.0f} s: {missing}") from None
    return text


def screenshot(driver, name: str, folder: Path = ARTIFACTS) -> Path:
    """Save a PNG of the current viewport as ``folder/<name>.png`` (the folder is created)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    driver.save_screenshot(str(path))
    return path


def clear_artifacts(prefix: str, folder: Path = ARTIFACTS) -> None:
    """Remove earlier screenshots ``folder/<prefix>*.png`` so the folder shows one run."""
    if folder.is_dir():
        for old in folder.glob(f"{prefix}*.png"):
            old.unlink()


__all__ = ["ARTIFACTS", "CHROMEDRIVER", "CHROMIUM", "chromium", "clear_artifacts", "missing_browser", "page_text",
           "screenshot", "start_driver", "wait_for", "wait_for_text"]
