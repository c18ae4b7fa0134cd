"""Render MedPix case pages in a real headless browser (Selenium 4 driving Debian's chromium).

MedPix case pages are an AngularJS application: a plain GET gets the shell, the case text
arrives only after the page's scripts have fetched it. :class:`ChromiumRenderer` starts one
browser for the whole run, loads each page with a bounded page-load time, waits until the
page shows MedPix ``section`` blocks and no ``{{...}}`` template text (or the wait runs
out), and returns the DOM. Each rendered DOM is cached like any response (key
``render:<url>``), so a rerun renders nothing twice. The browser is started with options
that stop its own background traffic (the closed networks this runs on refuse it) and a
fresh, empty profile that is removed at the end.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol, Self

from .cache import Fetched
from .client import Fetcher, FetchError

log = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver", "chromium-driver")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,2000")
#: JavaScript that says whether the page has finished building its case sections.
READY_SCRIPT = ("var b = document.body; if (!b) return false;"
                "if ((b.innerText || '').indexOf('{{') >= 0) return false;"
                "return !!document.querySelector('.section');")


class RendererUnavailable(Exception):
    """The browser cannot be found or started; the message is the one line to show."""


class Renderer(Protocol):
    """Something that turns a page URL into its DOM after the page's scripts ran."""

    def render(self, url: str) -> Fetched: ...

    def forget(self, url: str) -> None: ...

    def close(self) -> None: ...


def find_chromium() -> tuple[str, str] | None:
    """Paths of the chromium binary and its driver, or None when either is missing."""
    browser = next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)
    driver = next((p for n in DRIVER_NAMES if (p := shutil.which(n))), None)
    return (browser, driver) if browser and driver else None


def why_unavailable() -> str | None:
    """Why chromium rendering cannot run here (None: it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'medpix-tui[scraper]')"
    if find_chromium() is None:
        return "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return None


class ChromiumRenderer:
    """One headless chromium for a whole run; pages rendered through the fetcher's cache and rate limit."""

    def __init__(self, fetcher: Fetcher, *, page_timeout: float = 30.0, wait_timeout: float = 15.0) -> None:
        reason = why_unavailable()
        if reason:
            raise RendererUnavailable(reason)
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        self.fetcher = fetcher
        self.page_timeout = page_timeout
        self.wait_timeout = wait_timeout
        self.rendered = 0
        browser, driver = find_chromium()  # type: ignore[misc]
        self._scratch = tempfile.TemporaryDirectory(prefix="medpix-scraper-chromium-")  # the browser's own profile
        self._profile = Path(self._scratch.name)
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        options.page_load_strategy = "eager"  # the wait below covers what the scripts add after DOMContentLoaded
        for arg in CHROMIUM_ARGS:
            options.add_argument(arg)
        options.add_argument(f"--user-data-dir={self._profile}")
        options.add_argument(f"--user-agent={fetcher.session.headers.get('User-Agent', '')}")
        start = time.perf_counter()
        try:
            self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        except WebDriverException as exc:
            self._scratch.cleanup()
            first = ((exc.msg or str(exc)).strip().splitlines()[0] if (exc.msg or str(exc)).strip()
                     else type(exc).__name__)
            raise RendererUnavailable(f"chromium did not start: {first[:200]}") from exc
        self.start_seconds = time.perf_counter() - start
        self.driver.set_page_load_timeout(page_timeout)
        log.info("chromium started in %.2fs", self.start_seconds)

    def render(self, url: str) -> Fetched:
        """The DOM of ``url`` once its scripts built the case (cached); raises FetchError when it cannot load."""
        from selenium.common.exceptions import TimeoutException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        key = f"render:{url}"
        hit = self.fetcher.cache.get(key)
        if hit is not None:
            self.fetcher.stats.cached += 1
            return hit
        reason = "not loaded"
        for attempt in range(self.fetcher.retries + 1):
            self.fetcher.limiter.wait()
            self.fetcher.stats.requests += 1
            try:
                self.driver.get(url)
                try:
                    WebDriverWait(self.driver, self.wait_timeout, poll_frequency=0.02).until(
                        lambda d: d.execute_script(READY_SCRIPT))
                except TimeoutException:
                    pass  # take the DOM as it is: the parser says "page not rendered" if it is the shell
                html = self.driver.page_source
            except TimeoutException:
                reason = f"page load timed out after {self.page_timeout:g}s"
            except WebDriverException as exc:
                reason = f"browser error ({(exc.msg or type(exc).__name__).splitlines()[0][:120]})"
            else:
                body = html.encode("utf-8")
                self.fetcher.cache.put(key, body, "text/html; charset=utf-8")
                self.fetcher.stats.fetched += 1
                self.rendered += 1
                return Fetched(key, body, "text/html; charset=utf-8")
            if attempt < self.fetcher.retries:
                delay = self.fetcher.backoff * 2 ** attempt
                self.fetcher.stats.retried += 1
                log.warning("render %s: %s; retry %d/%d in %.2fs", url, reason, attempt + 1, self.fetcher.retries,
                            delay)
                self.fetcher._sleep(delay)
        self.fetcher.stats.failed += 1
        raise FetchError(url, f"{reason}, gave up after {self.fetcher.retries + 1} attempts")

    def forget(self, url: str) -> None:
        """Evict a rendered DOM that proved unusable."""
        self.fetcher.cache.forget(f"render:{url}")

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        try:
            self.driver.quit()
        finally:
            self._scratch.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainRenderer:
    """``--renderer none``: the page as a plain GET returns it (mirrors that serve finished HTML)."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher

    def render(self, url: str) -> Fetched:
        return self.fetcher.get(url)

    def forget(self, url: str) -> None:
        self.fetcher.forget(url)

    def close(self) -> None:
        pass
