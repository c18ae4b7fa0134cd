"""Write medpix_tui/model/case_texts.npz: embeddings of the release's case texts and RAG documents.

    python -m tools.train.case_texts [--source ../shared/medpix-2.0]

Run it when the release's case texts or the sentence model change; a build then encodes only
the cases whose text has no shipped vector, and ``export --format rag`` likewise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from medpix_tui.corpora import rag_text, source_cases_with_images
from medpix_tui.model.case_text import SHIPPED, case_text, ship_text_embeddings

from . import ToolParser, one_line_errors


def _read(path: Path) -> Any:
    """A release's JSON file; a missing or broken one is one line (it was a traceback)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SystemExit(f"error: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SystemExit(f"error: {path} is not JSON: {exc}") from None


@one_line_errors()
def main() -> None:
    parser = ToolParser("case_texts", __doc__)
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "medpix-2.0")
    args = parser.parse_args()
    cases, images = (_read(args.source / name) for name in ("Case_topic.json", "Descriptions.json"))
    started = time.perf_counter()
    texts = [case_text(c) for c in cases] + [rag_text(c, i) for c, i in source_cases_with_images(cases, images)]
    count = ship_text_embeddings(texts)
    print(f"wrote {SHIPPED}: {count} case texts in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
