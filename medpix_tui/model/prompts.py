"""The MedPix 2.0 paper's zero-shot prompts: what the model is asked, and in which words.

Classes are the dataset's own values (``Type`` and ``Location Category``); labels are the
words the paper puts into its templates for them. Evaluation uses exactly these prompts,
so our figures can stand beside the paper's.
"""

from __future__ import annotations

from ..source import LOCATION_CATEGORIES, MODALITIES

TASKS = ("modality", "location")

MODALITY_TEMPLATE = "This image captured by {label}"
MODALITY_LABELS = {"CT": "CT scan", "MR": "Magnetic Resonance MR"}
LOCATION_TEMPLATE = "This image captured by CT or MR shows Disease located in the {label} area"

#: The paper's test-split accuracies (RN50x16 image tower, BioBERT text tower).
PAPER_ACCURACY = {"modality": 0.880, "location": 0.522}


def paper_prompts() -> dict[str, dict[str, object]]:
    """Per task: template, classes, the label filled in for each class, and the texts."""
    tasks = {
        "modality": (MODALITY_TEMPLATE, list(MODALITIES), [MODALITY_LABELS[m] for m in MODALITIES]),
        "location": (LOCATION_TEMPLATE, list(LOCATION_CATEGORIES), list(LOCATION_CATEGORIES)),
    }
    return {
        task: {"template": template, "classes": classes, "labels": labels,
               "texts": [template.format(label=label) for label in labels]}
        for task, (template, classes, labels) in tasks.items()
    }


def truth_of(doc: dict) -> dict[str, str]:
    """The true class of each task for an image document."""
    return {"modality": doc["Type"], "location": doc["Location Category"]}
