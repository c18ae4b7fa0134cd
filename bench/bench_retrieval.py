"""Similar cases from a history (issue 22): hit@k of embeddings beside BM25, query latency, build cost.

    python bench/bench_retrieval.py [--bundle B]

hit@k: for each test case's history, is a train case with the same diagnosis (and,
separately, the same ACR code) among the top k? Only test cases with such a train case count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# as the CLI runs: one BLAS thread (the numpy sentence model's second thread only spins on 2 busy cores)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from medpix_tui.bundle import resolve_bundle
from medpix_tui.model.case_text import (
    SentenceEncoder,
    case_text,
    encoder_for,
    retrieval_hits,
    similar_cases,
)

QUERIES = ["54 year old woman with sudden severe headache", "child with a limp and hip pain",
           "hematuria and flank pain", "new onset seizure in a young adult", "shortness of breath after surgery"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None)
    args = parser.parse_args()
    bundle = resolve_bundle(args.bundle)
    started = time.perf_counter()
    encoder = SentenceEncoder()
    print(f"sentence model load: {time.perf_counter() - started:.2f} s")
    similar_cases(bundle, "warm up", 10, encoder=encoder)
    times = []
    for query in QUERIES * 4:
        started = time.perf_counter()
        similar_cases(bundle, query, 10, encoder=encoder)
        times.append(time.perf_counter() - started)
    print(f"similar-cases query after load: median {statistics.median(times) * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms ({len(times)} queries, k=10)")
    cases = bundle.store.find("Clinical_Reports")
    started = time.perf_counter()
    encoder_for(len(cases)).encode([case_text(c) for c in cases])  # the encoder a build picks for them
    print(f"encoding all {len(cases)} case texts (what a build without the shipped vectors adds): "
          f"{time.perf_counter() - started:.1f} s; with them a build encodes "
          f"{bundle.manifest['model']['case_texts']['encoded']}")
    hits = retrieval_hits(bundle, encoder=encoder)
    for key in ("diagnosis", "acr_code"):
        row = hits[key]
        print(f"same {key} ({row['answerable']} of {hits['test_cases']} test cases answerable): "
              + "; ".join(f"{method} " + ", ".join(f"{k} {v:.3f}" for k, v in row[method].items())
                          for method in ("embedding", "bm25")))


if __name__ == "__main__":
    main()
