"""A region-consistent view of location accuracy: leave out images whose label names another region.

``Location Category`` is the organ system of the image's *case*, not the body region the
picture shows: a brain slice in a Musculoskeletal case is labelled "Spine and Muscles". Such
images cost every image model its answer. This flags them by a rule anyone can rerun: the
image's own caption names a region of another category (keywords below) and none of its
own. The rule is deliberately strict (a junction slice that names both regions is kept), so
it finds fewer than a visual audit would.

    python -m tools.train.regions --source ../shared/medpix-2.0 --model bundle/model --split test
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medpix_tui.source import SPLITS

from . import ToolParser, one_line_errors

#: Words that name a body region, by the paper's location classes (whole words, case-insensitive).
REGION_WORDS: dict[str, tuple[str, ...]] = {
    "Head": ("brain", "cerebral", "cerebellum", "cerebellar", "hemispheric", "hemisphere", "orbit", "globe",
             "parotid", "tongue", "thyroid", "sinus", "skull", "head", "neck", "chiari", "ventricle", "ventricles",
             "basilar"),
    "Thorax": ("lung", "lungs", "pulmonary", "pleural", "chest", "mediastinal", "bronchus", "bronchi", "trachea",
               "breast", "heart", "pericardial", "carina"),
    "Abdomen": ("liver", "hepatic", "spleen", "splenic", "pancreas", "pancreatic", "bowel", "jejunum", "ileum",
                "colon", "cecum", "duodenum", "stomach", "abdomen", "abdominal", "rectum", "hepatosplenomegaly"),
    "Spine and Muscles": ("spine", "spinal", "vertebra", "vertebral", "cord", "disc", "lumbar", "sacral", "fibula",
                          "tendon", "ankle", "achilles", "muscle", "femoral", "femur", "hip"),
    "Reproductive and Urinary System": ("kidney", "renal", "bladder", "nephrocalcinosis", "uterus", "uterine",
                                        "ovary", "ovarian", "prostate", "testis", "scrotal"),
}


def regions_named(text: str) -> set[str]:
    """The location classes whose region words occur in ``text``."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    return {region for region, names in REGION_WORDS.items() if words & set(names)}


def label_semantics(doc: dict[str, Any]) -> str | None:
    """The region the caption names instead of the label's, or None when they agree (or it names none)."""
    caption = str((doc.get("Description") or {}).get("Caption") or "")
    named = regions_named(caption)
    label = doc.get("Location Category")
    others = named - {label}
    if not others or label in named:
        return None
    return " / ".join(sorted(others))


def region_view(source_dir: Path, model_dir: Path, split: str) -> dict[str, Any]:
    """Location accuracy on ``split`` overall and on the images whose label agrees with the pictured region."""
    from medpix_tui.model.encoder import load_image_encoder
    from medpix_tui.model.evaluate import case_interval
    from medpix_tui.source import load_source

    source = load_source(source_dir, check_images=False)
    docs = [d for d in source.images if source.splits.get(d["U_id"]) == split]
    if not docs:  # an accuracy over no image was a ZeroDivisionError
        raise SystemExit(f"error: no image of {source_dir} is in the {split} split")
    predicted = load_image_encoder(model_dir).classify_files([source.image_path(d["image"]) for d in docs])
    flagged = {d["image"]: label_semantics(d) for d in docs}
    right = [p["location"] == d["Location Category"] for p, d in zip(predicted, docs, strict=True)]
    keep = [i for i, d in enumerate(docs) if flagged[d["image"]] is None]
    return {
        "split": split, "n": len(docs), "location_accuracy": round(sum(right) / len(docs), 4),
        "consistent_n": len(keep),
        "consistent_location_accuracy": round(sum(right[i] for i in keep) / len(keep), 4),
        "consistent_ci95": case_interval([right[i] for i in keep], [docs[i]["U_id"] for i in keep]),
        "label_semantics": [{"image": d["image"], "label": d["Location Category"], "caption_names": flagged[d["image"]],
                             "predicted": p["location"]}
                            for d, p in zip(docs, predicted, strict=True) if flagged[d["image"]]],
    }


@one_line_errors()
def main() -> None:
    parser = ToolParser("regions", __doc__)
    parser.add_argument("--source", type=Path, required=True, help="MedPix 2.0 source folder")
    parser.add_argument("--model", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--split", default="test", choices=SPLITS, help="the authors' split to score")
    args = parser.parse_args()
    print(json.dumps(region_view(args.source, args.model, args.split), indent=2))


if __name__ == "__main__":
    main()
