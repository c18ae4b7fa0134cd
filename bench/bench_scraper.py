"""Scraper figures against the local fixture site (127.0.0.1 only, nothing leaves the machine).

100 invented cases in the live formats (scraper_support.add_live) harvested at rate 0 through the
REST path (MedPix JSON) and through the rendered path (REST refused, every case page rendered in
headless chromium): seconds per case for each, chromium's start time, and the requests a resumed
run issues.

    python bench/bench_scraper.py [--cases 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

# E402: these import only once the line above puts the checkout and tests/ on the path
from scraper_support import FixtureSite, live_from_fixture, make_case  # noqa: E402

from tools.scraper import render  # noqa: E402
from tools.scraper.cache import ResponseCache  # noqa: E402
from tools.scraper.client import Fetcher  # noqa: E402
from tools.scraper.harvest import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100)
    args = parser.parse_args()
    cases = [live_from_fixture(make_case(n)) for n in range(args.cases)]
    ids = [c.uid for c in cases]
    images = sum(len(c.images) for c in cases)
    with FixtureSite() as site, tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            site.add_live(case)
        fetcher = Fetcher(ResponseCache(Path(tmp) / "rest-cache"), rate=0)
        start = time.perf_counter()
        report = run(Path(tmp) / "rest", fetcher, ids=ids, base=site.url, medpix_base=site.url)
        rest = time.perf_counter() - start
        print(f"REST path: {report.cases} cases, {report.images} images, {fetcher.stats.requests} requests, "
              f"{rest:.2f} s, {rest / args.cases:.3f} s per case")
        again = Fetcher(ResponseCache(Path(tmp) / "rest-cache"), rate=0)
        start = time.perf_counter()
        run(Path(tmp) / "rest-again", again, ids=ids, base=site.url, medpix_base=site.url)
        print(f"  resumed run: {again.stats.requests} requests issued, {time.perf_counter() - start:.2f} s")
        reason = render.why_unavailable()
        if reason:
            print(f"rendered path: skipped ({reason})")
            return
        site.rest_enabled = False
        fetcher = Fetcher(ResponseCache(Path(tmp) / "page-cache"), rate=0)
        browser = render.ChromiumRenderer(fetcher)
        print(f"chromium start: {browser.start_seconds:.2f} s")
        try:
            start = time.perf_counter()
            report = run(Path(tmp) / "pages", fetcher, ids=ids, base=site.url, medpix_base=site.url,
                         renderer=browser)
            pages = time.perf_counter() - start
        finally:
            browser.close()
        print(f"rendered path: {report.cases} cases, {browser.rendered} pages rendered ({images} images), "
              f"{pages:.2f} s, {pages / args.cases:.3f} s per case, {pages / max(browser.rendered, 1):.3f} s per page")


if __name__ == "__main__":
    main()
