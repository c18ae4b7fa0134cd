"""CPU timings of the model path ``classify`` takes: load, then one image at a time.

    python bench/bench_model.py [--model bundle/model] [--source ../shared/medpix-2.0] [-n 50]

Prints JSON: seconds to import torch, to load the checkpoint (image tower and zero-shot
head), and per-image classify latency (read PNG, preprocess, forward, softmax) as median
and 95th percentile over ``-n`` test-split images, one call per image as the CLI makes.
Budgets from the issue: load <= 3 s, <= 100 ms per image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "bundle" / "model")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "medpix-2.0")
    parser.add_argument("-n", type=int, default=50, help="images to time")
    args = parser.parse_args()

    started = time.perf_counter()
    import torch  # noqa: F401  (timed: every CLI call pays it)

    import_s = time.perf_counter() - started

    from medpix_tui.model.encoder import load_image_encoder
    from medpix_tui.source import load_source

    started = time.perf_counter()
    encoder = load_image_encoder(args.model)
    load_s = time.perf_counter() - started

    source = load_source(args.source, check_images=False)
    paths = [source.image_path(d["image"]) for d in source.images if source.splits.get(d["U_id"]) == "test"][:args.n]
    encoder.classify_files(paths[:1])  # warm-up: first-call allocations
    times = []
    for path in paths:
        started = time.perf_counter()
        encoder.classify_files([path])
        times.append(time.perf_counter() - started)
    times.sort()
    print(json.dumps({
        "model": encoder.name, "image_size": encoder.size,
        "import_torch_s": round(import_s, 3), "load_s": round(load_s, 3),
        "classify_ms_median": round(1000 * statistics.median(times), 1),
        "classify_ms_p95": round(1000 * times[int(0.95 * (len(times) - 1))], 1), "images": len(times),
        "budget": {"load_s": 3.0, "classify_ms": 100.0},
    }))


if __name__ == "__main__":
    main()
