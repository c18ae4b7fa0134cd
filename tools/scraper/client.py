"""A polite HTTP client: a clear User-Agent, a global rate limit, retries with backoff, a cache.

Every GET goes through :class:`Fetcher`. A cached URL costs no request at all; an uncached
one waits for the rate limiter, then is retried with exponential backoff on 429, 5xx,
timeouts and connection errors (a body cut short included). Anything else (404, 403...)
fails at once. Only complete 200 responses are cached.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from .cache import Fetched, ResponseCache

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "medpix-tui-scraper/0.1 (research harvest of MedPix 2.0; python-requests)"
#: Content type of a cached 404 (see ``Fetcher.get(remember_missing=True)``).
MISSING = "x-medpix-scraper/missing"
#: Longest wait honoured from a ``Retry-After`` header, in seconds.
MAX_RETRY_AFTER = 120.0


class FetchError(Exception):
    """A URL that could not be fetched; ``reason`` is the one line for the log and summary."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"GET {url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass
class FetchStats:
    """What the network layer did, for the end-of-run summary and the benchmark."""

    requests: int = 0   # HTTP requests actually issued, retries included
    fetched: int = 0    # URLs fetched from the network
    cached: int = 0     # URLs answered by the cache
    retried: int = 0    # attempts repeated after a retryable failure
    failed: int = 0     # URLs given up on


class RateLimiter:
    """At most ``rate`` request starts per second (0: unlimited), shared by all hosts."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    def wait(self) -> None:
        """Block until the next request may start."""
        if not self.interval:
            return
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


def _retry_after(value: str | None) -> float:
    """Seconds asked for by a ``Retry-After`` header; 0 for an HTTP date or nonsense (our backoff applies)."""
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else 0.0


class Fetcher:
    """GET with cache, rate limit and retries; counts everything in :attr:`stats`."""

    def __init__(self, cache: ResponseCache, *, rate: float = 1.0, retries: int = 4, backoff: float = 1.0,
                 timeout: float = 30.0, user_agent: str = DEFAULT_USER_AGENT,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cache = cache
        self.limiter = RateLimiter(rate, sleep=sleep)
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self._sleep = sleep
        self.stats = FetchStats()

    def get(self, url: str, *, remember_missing: bool = False) -> Fetched:
        """The body of ``url``; raises :class:`FetchError` once retries are spent.

        With ``remember_missing`` a 404 is cached too (REST lookups of ids the API does not
        know), so a resumed run does not ask again.
        """
        hit = self.cache.get(url)
        if hit is not None:
            self.stats.cached += 1
            if hit.content_type == MISSING:
                raise FetchError(url, "HTTP 404 (not retried; remembered from an earlier run)")
            return hit
        for attempt in range(self.retries + 1):
            self.limiter.wait()
            self.stats.requests += 1
            wait = 0.0
            try:
                resp = self.session.get(url, timeout=self.timeout)
            except requests.Timeout:
                reason = f"timed out after {self.timeout:g}s"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                reason = f"connection failed ({type(exc).__name__})"
            except requests.RequestException as exc:
                self.stats.failed += 1
                raise FetchError(url, f"request failed ({type(exc).__name__}: {exc})") from exc
            else:
                if resp.status_code == 200:
                    content_type = resp.headers.get("Content-Type", "")
                    self.cache.put(url, resp.content, content_type)
                    self.stats.fetched += 1
                    return Fetched(url, resp.content, content_type)
                reason = f"HTTP {resp.status_code}"
                if resp.status_code != 429 and resp.status_code < 500:
                    if resp.status_code == 404 and remember_missing:
                        self.cache.put(url, b"", MISSING)
                    self.stats.failed += 1
                    raise FetchError(url, f"{reason} (not retried)")
                wait = _retry_after(resp.headers.get("Retry-After"))
            if attempt == self.retries:
                break
            delay = max(self.backoff * 2 ** attempt, wait)
            self.stats.retried += 1
            log.warning("GET %s: %s; retry %d/%d in %.2fs", url, reason, attempt + 1, self.retries, delay)
            self._sleep(delay)
        self.stats.failed += 1
        raise FetchError(url, f"{reason}, gave up after {self.retries + 1} attempts")

    def forget(self, url: str) -> None:
        """Evict a cached response whose content turned out unusable (see :meth:`ResponseCache.forget`)."""
        self.cache.forget(url)
