"""The quality report on a bundle (issue 21): its time on 2 cores and what it finds.

    python bench/bench_quality.py [--bundle B] [--runs 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpix_tui.bundle import resolve_bundle
from medpix_tui.quality import quality_report, summary_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    bundle = resolve_bundle(args.bundle)
    times = []
    report = {}
    for _ in range(args.runs):
        started = time.perf_counter()
        report = quality_report(bundle)
        times.append(time.perf_counter() - started)
    print(f"report quality: median {statistics.median(times):.1f} s over {len(times)} runs "
          f"({', '.join(f'{t:.1f}' for t in times)}; target 20 s on 2 cores)")
    for line in summary_lines(report)[1:]:
        print(line)
    cross = [p for p in report["duplicates"]["near"] if not p["same_case"]]
    print(f"cross-case near-duplicate pairs: {len(cross)}; across splits: {len(report['leakage']['pairs'])}")
    for pair in report["leakage"]["pairs"]:
        print(f"  {pair['a']} ({pair['splits'][0]})  {pair['b']} ({pair['splits'][1]})  "
              f"hash bits {pair['phash_distance']}, cosine {pair['cosine']}")


if __name__ == "__main__":
    main()
