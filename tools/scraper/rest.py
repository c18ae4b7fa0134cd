"""MedPix's REST JSON: ``/rest/encounter.json``, ``/rest/topic.json``, ``/rest/image.json``, mapped to MedPix 2.0.

Field names are those public importers read (gayoxo/ClavyMedPixImport; harrison-ai/radbench for
``image.json``); see the README's mapping table. Text is taken exactly as served: line breaks and
spacing are kept, JSON ``null`` and empty strings mean "absent". Anything that is not the expected
JSON object raises :class:`RestError`, so the harvest falls back to the rendered case page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

#: encounter.json key -> release ``Case`` field.
ENCOUNTER_FIELDS = {"title": "Title", "history": "History", "exam": "Exam", "findings": "Findings",
                    "ddx": "Differential Diagnosis", "diagnosis": "Case Diagnosis", "dxHow": "Diagnosis By",
                    "txFollowup": "Treatment & Follow Up", "discussion": "Discussion"}
#: topic.json key -> release ``Topic`` field (keyword1..3 are joined into ``Keywords``).
TOPIC_FIELDS = {"title": "Title", "factoid": "Disease Discussion", "acrCode": "ACR Code",
                "subCategory": "Category", "reference": "Reference", "url": "External Links"}
KEYWORD_KEYS = ("keyword1", "keyword2", "keyword3")
#: image.json / imageList key -> release ``Description`` field.
IMAGE_FIELDS = {"acrCode": "ACR Codes", "imageCaption": "Caption", "figurePart": "Figure Part",
                "modality": "Modality", "plane": "Plane"}
_SYNPIC = re.compile(r"synpic\d+", re.IGNORECASE)


class RestError(Exception):
    """A REST answer that cannot be used (not JSON, not an object, an error object)."""


@dataclass
class RestImage:
    """One image as the REST API describes it."""

    image_id: str | None                    # MedPix's image id (the figure id of ``case?id=``)
    synpic: str | None                      # "synpic46283", from imageURL/imageName
    url: str | None                         # imageURL, usually relative
    fields: dict[str, str] = field(default_factory=dict)
    encounter_id: str | None = None
    topic_id: str | None = None


@dataclass
class Encounter:
    """One case: its text, patient, topic id and images."""

    encounter_id: str | None
    case: dict[str, str]
    age: str | None
    sex: str | None
    topic_id: str | None
    images: list[RestImage]


@dataclass
class Topic:
    """The disease topic of a case, and the case's location (a topic field in MedPix)."""

    topic: dict[str, str]
    location: str | None


def _text(value: Any) -> str | None:
    """A served value as text, unchanged; None for null, empty or non-scalar values."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def _object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RestError(f"{what}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict):
        raise RestError(f"{what}: expected a JSON object, got {type(data).__name__}")
    if data.get("error") and len(data) <= 2:
        raise RestError(f"{what}: error {str(data['error'])[:120]}")
    return data


def synpic_of(*names: str | None) -> str | None:
    """The ``synpicNNN`` in the first name that holds one (imageURL ``/images/full/synpic46283.jpg``)."""
    for name in names:
        if name:
            match = _SYNPIC.search(PurePosixPath(urlparse(name).path).name) or _SYNPIC.search(name)
            if match:
                return match.group(0).lower()
    return None


def _image(data: dict[str, Any]) -> RestImage:
    fields = {name: text for key, name in IMAGE_FIELDS.items() if (text := _text(data.get(key))) is not None}
    url = _text(data.get("imageURL"))
    return RestImage(_text(data.get("imageID")), synpic_of(url, _text(data.get("imageName")),
                                                           _text(data.get("imageID"))),
                     url, fields, _text(data.get("encounterID")) or _text(data.get("encounter")),
                     _text(data.get("topicID")) or _text(data.get("topic")))


def parse_encounter(text: str) -> Encounter:
    """An ``encounter.json`` answer; raises RestError when it holds no case."""
    data = _object(text, "encounter")
    case = {name: value for key, name in ENCOUNTER_FIELDS.items() if (value := _text(data.get(key))) is not None}
    images = [_image(i) for i in data.get("imageList") or [] if isinstance(i, dict)]
    if not case and not images:
        raise RestError("encounter: no case fields and no images")
    return Encounter(_text(data.get("encounterID")), case, _text(data.get("age")), _text(data.get("sex")),
                     _text(data.get("topicID")), images)


def parse_topic(text: str) -> Topic:
    """A ``topic.json`` answer; raises RestError when it has no title."""
    data = _object(text, "topic")
    topic = {name: value for key, name in TOPIC_FIELDS.items() if (value := _text(data.get(key))) is not None}
    keywords = "".join(k for key in KEYWORD_KEYS if (k := _text(data.get(key))) is not None)
    if keywords:
        topic["Keywords"] = keywords
    if "Title" not in topic:
        raise RestError("topic: no title")
    return Topic(topic, _text(data.get("location")))


def parse_image(text: str) -> RestImage:
    """An ``image.json`` answer; raises RestError when it is not one image."""
    data = _object(text, "image")
    image = _image(data)
    if not (image.fields or image.url or image.encounter_id):
        raise RestError("image: no image fields")
    return image
