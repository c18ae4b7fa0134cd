"""Scraper figures against the local fixture site (127.0.0.1 only, nothing leaves the machine):
wall time to harvest N fixture cases at a given rate, and the requests a resumed run issues.

    python bench/bench_scraper.py [--cases 100] [--rate 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from scraper_support import FixtureSite, make_case  # noqa: E402
from tools.scraper.cache import ResponseCache  # noqa: E402
from tools.scraper.client import Fetcher  # noqa: E402
from tools.scraper.harvest import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second (0: no limit)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ids = [f"MPX9{n:03d}" for n in range(args.cases)]
    with FixtureSite() as site:
        for n in range(args.cases):
            site.add_case(make_case(n))
        times, resumed = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                cache = ResponseCache(Path(tmp) / "cache")
                fetcher = Fetcher(cache, rate=args.rate)
                start = time.perf_counter()
                report = run(Path(tmp) / "fresh", fetcher, ids=ids, base=site.url)
                times.append(time.perf_counter() - start)
                again = Fetcher(cache, rate=args.rate)
                served = site.count()
                start = time.perf_counter()
                run(Path(tmp) / "resumed", again, ids=ids, base=site.url)
                resumed.append((again.stats.requests, site.count() - served, time.perf_counter() - start))
    print(f"fixture harvest: {args.cases} cases, {report.images} images, {fetcher.stats.requests} requests, "
          f"rate {args.rate:g}/s")
    print(f"  wall time: median {statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"  resumed run: {max(r[0] for r in resumed)} requests issued, {max(r[1] for r in resumed)} received "
          f"by the site, median {statistics.median(r[2] for r in resumed):.2f} s")


if __name__ == "__main__":
    main()
