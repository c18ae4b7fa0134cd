"""Read a DICOM file into the 8-bit grayscale picture a radiologist would look at.

The model was trained on MedPix PNGs, which are windowed CT and scaled MR slices, so a
DICOM is brought to the same look: CT through a window (the file's own WindowCenter and
WindowWidth, else a soft-tissue window), MR and the rest by min-max scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError

#: Soft-tissue window (Hounsfield units), used when a CT file names none.
DEFAULT_CT_WINDOW = (40.0, 400.0)


def is_dicom(path: Path) -> bool:
    """True when the file carries the DICOM preamble marker (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _first(value: object) -> float | None:
    """A DICOM number that may be multi-valued (WindowCenter often is): its first value."""
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)  # type: ignore[arg-type]  # a DICOM number or text
    except (TypeError, ValueError):
        return None


def _frame(ds: object, path: Path) -> np.ndarray:
    try:
        pixels = ds.pixel_array  # type: ignore[attr-defined]  # a pydicom Dataset
    except Exception as exc:  # pydicom raises many types for unsupported encodings
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise InputError(f"{path}: cannot decode DICOM pixel data (transfer syntax {syntax}: {str(exc)[:80]})") from exc
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if samples > 1:  # colour: the channel mean
        pixels = pixels.mean(axis=-1)
    if pixels.ndim == 3:  # a stack of slices: the middle one
        pixels = pixels[pixels.shape[0] // 2]
    if pixels.ndim != 2 or pixels.size == 0:
        raise InputError(f"{path}: DICOM pixel data is not a 2-D image (shape {pixels.shape})")
    return pixels.astype(np.float32)


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (np.clip(values, low, high) - low) / (high - low) * 255.0
    return np.rint(scaled).astype(np.uint8)


def read_dicom(path: Path) -> np.ndarray:
    """The 8-bit grayscale picture of a DICOM file; InputError when it holds no image."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable DICOM file ({str(exc)[:80]})") from exc
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data")
    values = _frame(ds, path)
    slope = _first(getattr(ds, "RescaleSlope", None))
    intercept = _first(getattr(ds, "RescaleIntercept", None))
    values = values * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    if str(getattr(ds, "Modality", "")).upper() == "CT":
        center = _first(getattr(ds, "WindowCenter", None))
        width = _first(getattr(ds, "WindowWidth", None))
        if center is None or width is None or width <= 1:
            center, width = DEFAULT_CT_WINDOW
        picture = _to_uint8(values, center - width / 2, center + width / 2)
    else:
        picture = _to_uint8(values, float(values.min()), float(values.max()))
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        picture = 255 - picture
    return picture
