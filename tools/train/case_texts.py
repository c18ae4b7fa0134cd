"""Write medpix_tui/model/case_texts.npz: embeddings of the release's case texts and RAG documents.

    python -m tools.train.case_texts [--source ../shared/medpix-2.0]

Run it when the release's case texts or the sentence model change; a build then encodes only
the cases whose text has no shipped vector, and ``export --format rag`` likewise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medpix_tui.corpora import rag_text, source_cases_with_images
from medpix_tui.model.case_text import SHIPPED, case_text, ship_text_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "medpix-2.0")
    args = parser.parse_args()
    cases = json.loads((args.source / "Case_topic.json").read_text(encoding="utf-8"))
    images = json.loads((args.source / "Descriptions.json").read_text(encoding="utf-8"))
    started = time.perf_counter()
    texts = [case_text(c) for c in cases] + [rag_text(c, i) for c, i in source_cases_with_images(cases, images)]
    count = ship_text_embeddings(texts)
    print(f"wrote {SHIPPED}: {count} case texts in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
