"""The release's raw label strings and the clean values they stand for.

MedPix 2.0 copies MedPix's free-typed fields: 29 spellings of ``Description.Modality`` (some
with a leading space, "MRI" beside "MR"), "Transverse" beside "Axial", "N/A" for an unknown
sex, ages as strings, the placeholder ACR code ``-1.-1`` on 99 images. One table per field says
what each raw value means; the quality report prints it, and facets and reviews read values
through :func:`clean` so that one meaning is one value. Raw values are never changed in the
store: the mapping is a view.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

#: A value that says "unknown": cleaned to None.
UNKNOWN = None

#: Modality spellings that differ from their clean form by more than spacing.
MODALITY_ALIASES: dict[str, str] = {
    "MRI": "MR",
    "MR - Montage of Images": "MR - Montage",
    "CT - Montage of Images": "CT - Montage",
}
#: Modality strings that describe no CT or MR slice (the family they clean to is "other").
NOT_CT_OR_MR = frozenset({"Drawing", "Virtual Colonoscopy", "MRS - Spectroscopy"})

PLANE_ALIASES: dict[str, str | None] = {
    "Transverse": "Axial",
    "NOS - Not specified": UNKNOWN,
    "Other View (see caption)": "Other",
}
#: Planes that say the picture is no cross-section (a photograph, a drawing, a radiograph view).
NOT_A_SLICE_PLANES = frozenset({"Photograph", "Drawing", "Gross Pathology", "AP", "PA", "Lateral", "Frontal"})

SEX_ALIASES: dict[str, str | None] = {"N/A": UNKNOWN, "": UNKNOWN}
#: Location strings that are no body location (a place, an instruction left in the form).
LOCATION_ALIASES: dict[str, str | None] = {"Left Blank": UNKNOWN, "Bethesda, MD": UNKNOWN}
PLACEHOLDER_ACR = "-1.-1"

_SPACES = re.compile(r"\s+")


def _tidy(value: Any) -> str | None:
    """A string with its spacing normalised; None for missing or blank."""
    if value is None:
        return None
    text = _SPACES.sub(" ", str(value)).strip()
    return text or None


def clean_modality(value: Any) -> str | None:
    text = _tidy(value)
    return MODALITY_ALIASES.get(text, text) if text else None


def modality_family(value: Any) -> str | None:
    """CT, MR, or "other" for a modality string (None when there is none)."""
    text = clean_modality(value)
    if text is None:
        return None
    if text in NOT_CT_OR_MR:
        return "other"
    if re.match(r"(CT|CTA)\b", text):
        return "CT"
    if re.match(r"(MR|MRA|MRI)\b", text):
        return "MR"
    return "other"


def clean_plane(value: Any) -> str | None:
    text = _tidy(value)
    return PLANE_ALIASES.get(text, text) if text else None


def clean_sex(value: Any) -> str | None:
    text = _tidy(value)
    return SEX_ALIASES.get(text, text.lower()) if text else None


#: The most years an age may say.
MAX_AGE = 120
_AGE_TEXT = re.compile(r"0|[1-9][0-9]{0,2}")


def clean_age(value: Any) -> int | None:
    """Age in years as a number (the release stores strings); None when not a plausible age."""
    text = _tidy(value)
    if text is None or not (text.isascii() and text.isdigit()):  # "٥٤".isdigit() too
        return None
    age = int(text)
    return age if age <= MAX_AGE else None


def age_problem(value: Any) -> str | None:
    """Why a stored ``Description.Age`` is not one the store can compare as a number, or None:
    the release writes whole years as plain ASCII text ("54"), and queries, exports and the
    quality report read it so; " 54", "054", "٥٤" or "130" would each be a silent hole."""
    if value is None or (isinstance(value, str) and _AGE_TEXT.fullmatch(value) and int(value) <= MAX_AGE):
        return None
    return (f"must be a whole number of years from 0 to {MAX_AGE} written as plain text, e.g. \"54\"; "
            f"got {str(value)[:40]!r}")


def clean_location(value: Any) -> str | None:
    text = _tidy(value)
    return LOCATION_ALIASES.get(text, text) if text else None


def clean_acr(value: Any) -> str | None:
    """An ACR code, None for the placeholder ``-1.-1``; ``8.-1`` (organ known, pathology not) stays."""
    text = _tidy(value)
    return None if text in (None, PLACEHOLDER_ACR) else text


#: Dotted path -> cleaner. The quality report lists every raw value of these with its clean form.
FIELDS: dict[str, Callable[[Any], Any]] = {
    "Description.Modality": clean_modality,
    "Description.Plane": clean_plane,
    "Description.Sex": clean_sex,
    "Description.Age": clean_age,
    "Location": clean_location,
    "Location Category": _tidy,
    "Description.ACR Codes": clean_acr,
}


def clean(path: str, value: Any) -> Any:
    """The clean value of a field (unmapped fields pass through unchanged)."""
    cleaner = FIELDS.get(path)
    return cleaner(value) if cleaner else value
