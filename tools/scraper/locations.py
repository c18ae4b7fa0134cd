"""Map MedPix's fine ``Location`` to the release's five ``Location Category`` values.

MedPix files each case under an organ-system location ("Brain and Neuro", "Chest,
Pulmonary"...). The release adds a coarse body region. Most locations name one region;
the table below says which. A few ("Generalized", "Vascular", "Endocrine", "Hematopoietic",
"Pathology") span several, so the region is taken from the first number of the ACR code
(the ACR Index's anatomic field: 1 skull and contents, 2 face and neck, 3 spine and
peripheral nerves, 4 skeleton, 5 heart, 6 chest, 7 gastrointestinal, 8 genitourinary),
topic code first, then the image's; when that says nothing either, the region these
locations most often have in the release is used. The table was checked against the
release's (Location, Location Category) pairs: see ``tests/test_scraper_units.py``.
"""

from __future__ import annotations

from medpix_tui.source import LOCATION_CATEGORIES

HEAD, THORAX, ABDOMEN, SPINE, URO = LOCATION_CATEGORIES

#: Locations that name one body region.
LOCATION_TO_CATEGORY: dict[str, str] = {
    "brain and neuro": HEAD,
    "head and neck": HEAD,
    "eye and orbit": HEAD,
    "ophthalmology": HEAD,
    "dental, oral, or tooth": HEAD,
    "nerve, central": HEAD,
    "nerve, peripheral": HEAD,
    "chest, pulmonary": THORAX,
    "cardiovascular": THORAX,
    "breast and mammography": THORAX,
    "abdomen": ABDOMEN,
    "gastrointestinal": ABDOMEN,
    "musculoskeletal": SPINE,
    "spine": SPINE,
    "genitourinary": URO,
    "obstetrics": URO,
    "reproductive": URO,
}

#: Regions of the ACR anatomic field (first number of an ACR code); 9 (vascular) and 0 span several.
ACR_TO_CATEGORY: dict[str, str] = {"1": HEAD, "2": HEAD, "3": SPINE, "4": SPINE, "5": THORAX, "6": THORAX,
                                   "7": ABDOMEN, "8": URO}

#: Last resort for the locations that span regions: the region they most often have in the release.
SPANNING_DEFAULT: dict[str, str] = {
    "generalized": HEAD,
    "vascular": ABDOMEN,
    "endocrine": ABDOMEN,
    "hematopoietic": ABDOMEN,
    "pathology": ABDOMEN,
}


def _acr_region(code: str | None) -> str | None:
    if not code:
        return None
    first = code.strip().split(".", 1)[0].strip()
    return ACR_TO_CATEGORY.get(first[:1]) if first.isdigit() else None


def location_category(location: str | None, topic_acr: str | None = None, image_acr: str | None = None) -> str | None:
    """The ``Location Category`` for a case's location and ACR codes, or None when nothing decides it."""
    key = (location or "").strip().lower()
    if key in LOCATION_TO_CATEGORY:
        return LOCATION_TO_CATEGORY[key]
    return _acr_region(topic_acr) or _acr_region(image_acr) or SPANNING_DEFAULT.get(key)
