"""Read a DICOM file into the 8-bit grayscale picture a radiologist would look at.

The model was trained on MedPix PNGs, which are windowed CT and scaled MR slices, so a
DICOM is brought to the same look: CT through a window (the file's own WindowCenter and
WindowWidth, else a soft-tissue window), MR and the rest scaled to their range, less the
0.1% at each end so that one hot pixel does not darken the slice. An MR file's own window
is not used: on pydicom's 26 MR test files it lowered the model's MR probability on most
and turned two more into CT (min-max: 4 called CT; the file's window: 6; the 0.1% range: 5,
the fifth at 52%). A colour file (a screenshot) is taken as the display values it holds.

A DICOM file also says what it is: its Modality tag. :func:`read_header` reads the tags
alone (never the pixels), so a CR or US file is answered "not CT or MR" without decoding,
and the pixel data's size is checked against :data:`MAX_FRAME_VALUES` before any decoding:
a 498 KB deflated file can hold gigabytes of pixels.
"""

from __future__ import annotations

import math
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, brief
from ..source import MIN_SIDE

#: Soft-tissue window (Hounsfield units), used when a CT file names none.
DEFAULT_CT_WINDOW = (40.0, 400.0)
#: The largest frame decoded, in values (rows x columns x samples): 4096 x 4096. CT and MR
#: slices are at most 1024 x 1024; the cap keeps a hostile header's RSS far below 1 GB.
MAX_FRAME_VALUES = 4096 * 4096
#: A deflated data set is inflated in memory by pydicom; above this it is refused unread.
MAX_INFLATED_BYTES = 256 * 2 ** 20
DEFLATED = "1.2.840.10008.1.2.1.99"
#: The package that decodes each compressed transfer syntax (pydicom's pylibjpeg plugins).
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg", "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg", "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg", "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg", "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg", "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
}
#: Modality tags the model answers for; any other is reported "not CT or MR".
MODEL_MODALITIES = ("CT", "MR")

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: The SOP class of a DICOMDIR: the index of a DICOM disc or folder, holding no image.
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"

#: Held while warnings filters are changed: pydicom reports oddities through warnings, and
#: catch_warnings is process-wide, not per thread, so DICOM reads (rare beside PNGs) take turns.
WARNINGS_LOCK = threading.RLock()


@contextmanager
def _quiet() -> Iterator[None]:
    """No pydicom or numpy warnings on stderr: the file's problems are reported as errors."""
    with WARNINGS_LOCK, warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def is_dicom(path: Path) -> bool:
    """True when the file carries the DICOM preamble marker (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicomdir(path: Path) -> bool:
    """True for a DICOMDIR (its file meta names the media directory SOP class), whatever its name."""
    import pydicom

    try:
        with _quiet():
            meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - a damaged header is not a DICOMDIR; reading it says what is wrong
        return False
    return str(getattr(meta, "MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY


def _first(value: object) -> float | None:
    """A DICOM number that may be multi-valued (WindowCenter often is): its first value."""
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0] if len(value) else None
    try:
        return None if value is None or value == "" else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _int(ds: Any, name: str, default: int) -> int:
    value = _first(getattr(ds, name, None))
    return default if value is None or not math.isfinite(value) else int(value)


@dataclass(frozen=True)
class DicomHeader:
    """What a DICOM file says about itself, read without its pixels."""

    path: Path
    dataset: Any  # pydicom Dataset, its pixel data left unread on disk
    modality: str  # the Modality tag, upper case; '' when absent
    syntax: str  # transfer syntax UID
    syntax_name: str
    rows: int
    columns: int
    samples: int
    frames: int
    has_pixels: bool
    #: read without the DICOM file header (no preamble, or no file meta): pixels decode from ``dataset``
    headerless: bool = False

    @property
    def is_ct_or_mr(self) -> bool:
        return self.modality in MODEL_MODALITIES


def _inflated_within(path: Path, offset: int, cap: int) -> bool:
    """Whether the deflate stream from ``offset`` inflates to at most ``cap`` bytes (1 MB at a time)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(1 << 16):
                while chunk:
                    total += len(inflater.decompress(chunk, 1 << 20))
                    if total > cap:
                        return False
                    chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise InputError(f"{path}: deflated DICOM data set is corrupt ({exc})") from None
    return True


def read_header(path: Path) -> DicomHeader:
    """The tags of a DICOM file, pixels unread; InputError when it is not one or is too large."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    with _quiet():
        if not is_dicom(path):
            return _read_headerless(path)
        try:
            meta = pydicom.filereader.read_file_meta_info(path)
            syntax = str(getattr(meta, "TransferSyntaxUID", ""))
            if syntax == DEFLATED:
                offset = 132 + 12 + int(getattr(meta, "FileMetaInformationGroupLength", 0) or 0)
                if not _inflated_within(path, offset, MAX_INFLATED_BYTES):
                    raise InputError(f"{path}: deflated DICOM data set inflates to more than "
                                     f"{MAX_INFLATED_BYTES // 2 ** 20} MB; refused")
            if str(getattr(meta, "MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY:
                raise InputError(f"{path}: a DICOMDIR (the index of a DICOM disc or folder), not an image; "
                                 "classify the files it lists")
            ds = pydicom.dcmread(path, defer_size=4096)  # large values (the pixels) stay on disk
        except InputError:
            raise
        except (InvalidDicomError, OSError, ValueError, TypeError, KeyError, AttributeError, EOFError) as exc:
            raise InputError(f"{path}: not a readable DICOM file ({brief(exc, path)})") from None
        return _header(path, ds)


#: Elements a DICOM data set read without its file header must hold one of to count as one.
_HEADERLESS_SIGNS = ("SOPClassUID", "Modality", "PixelData", "StudyInstanceUID")


def _read_headerless(path: Path) -> DicomHeader:
    """A data set without the 128-byte preamble and ``DICM`` (older writers, ACR-NEMA), read as
    pydicom's ``force=True`` reads it; its transfer syntax, when no file meta names it, is
    the encoding pydicom found (little endian, implicit or explicit VR)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        ds = pydicom.dcmread(path, force=True, defer_size=4096)
        if not any(name in ds for name in _HEADERLESS_SIGNS):
            raise ValueError("no DICOM data elements")
        if str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) == DEFLATED:
            raise ValueError("a deflated data set needs its DICOM header")
        if not getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None):
            implicit, little = getattr(ds, "original_encoding", (True, True))
            meta = getattr(ds, "file_meta", None) or FileMetaDataset()
            meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                      ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
            ds.file_meta = meta
    except Exception as exc:  # noqa: BLE001 - force=True reads arbitrary bytes; any failure means "not DICOM"
        raise InputError(f"{path}: not a DICOM file (no DICOM header, and no data set without one: "
                         f"{brief(exc, path, 60)})") from None
    return replace(_header(path, ds), headerless=True)


def _modality(ds: Any) -> str:
    """The Modality tag, upper case; a (malformed) multi-valued one as DICOM writes it, CT\\MR."""
    value = getattr(ds, "Modality", "") or ""
    values = [value] if isinstance(value, str) else list(value)
    return "\\".join(str(v).strip().upper() for v in values if str(v).strip())


def _header(path: Path, ds: Any) -> DicomHeader:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return DicomHeader(path=path, dataset=ds, modality=_modality(ds),
                       syntax=str(uid or ""), syntax_name=str(getattr(uid, "name", "") or uid or "unknown"),
                       rows=_int(ds, "Rows", 0), columns=_int(ds, "Columns", 0),
                       samples=max(_int(ds, "SamplesPerPixel", 1), 1), frames=max(_int(ds, "NumberOfFrames", 1), 1),
                       has_pixels=any(k in ds for k in _PIXEL_TAGS))


def _check_shape(header: DicomHeader) -> None:
    path = header.path
    if not header.has_pixels:
        raise InputError(f"{path}: DICOM file has no pixel data (none in its tags, or the file is cut short)")
    rows, cols = header.rows, header.columns
    if not rows or not cols:
        raise InputError(f"{path}: DICOM file has pixel data but no Rows and Columns to shape it")
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise InputError(f"{path}: DICOM image of {cols}x{rows} pixels is too small to classify "
                         f"(at least {MIN_SIDE}x{MIN_SIDE})")
    if rows * cols * header.samples > MAX_FRAME_VALUES:
        raise InputError(f"{path}: DICOM frame of {cols}x{rows}x{header.samples} values is larger than the "
                         f"{MAX_FRAME_VALUES:,} this tool decodes")


def _decoder_error(header: DicomHeader) -> InputError | None:
    """One line naming the package to install when no decoder for the transfer syntax is present."""
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(header.syntax).is_available
    except (NotImplementedError, ValueError):
        return InputError(f"{header.path}: DICOM transfer syntax {header.syntax_name} ({header.syntax}) "
                          "is not supported")
    if available:
        return None
    package = DECODER_PACKAGES.get(header.syntax, "pylibjpeg-libjpeg")
    return InputError(f"{header.path}: decoding {header.syntax_name} needs the {package} package "
                      f"(pip install pylibjpeg {package})")


def frame_number(header: DicomHeader, frame: int | None) -> int:
    """The 1-based frame to read (``frame``, default the middle one); InputError past the last."""
    number = header.frames // 2 + 1 if frame is None else frame
    if not 1 <= number <= header.frames:
        raise InputError(f"{header.path}: --frame {number} is out of range (the file has {header.frames} "
                         f"frame{'s' if header.frames > 1 else ''})")
    return number


def _frame(header: DicomHeader, frame: int | None) -> tuple[np.ndarray, int]:
    """The pixels of one frame (1-based ``frame``, default the middle one) and its number:
    rows x columns, or rows x columns x 3 for a colour file (pydicom converts YBR to RGB)."""
    from pydicom.pixels import pixel_array

    number = frame_number(header, frame)
    _check_shape(header)
    error = _decoder_error(header)
    if error is not None:
        raise error
    with _quiet():
        try:
            source: Any = header.dataset if header.headerless else header.path
            if header.syntax == DEFLATED:  # size checked by read_header; pydicom inflates it whole
                import pydicom

                source = pydicom.dcmread(header.path)
            pixels = pixel_array(source, index=number - 1 if header.frames > 1 else None)
        except MemoryError:
            raise InputError(f"{header.path}: DICOM pixel data too large to decode") from None
        except Exception as exc:  # noqa: BLE001 - pydicom and its plugins raise many types for damaged data
            raise InputError(f"{header.path}: cannot decode DICOM pixel data ({header.syntax_name}: "
                             f"{brief(exc, header.path)})") from None
    colour = header.samples > 1 and pixels.ndim == 3
    if not (pixels.ndim == 2 or colour) or pixels.shape[0] < MIN_SIDE or pixels.shape[1] < MIN_SIDE:
        raise InputError(f"{header.path}: DICOM pixel data is not a 2-D image (shape {pixels.shape})")
    values = pixels.astype(np.float32)
    if not np.isfinite(values).all():
        raise InputError(f"{header.path}: DICOM pixel data holds values that are not numbers")
    return values, number


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (np.clip(values, low, high) - low) / (high - low) * 255.0
    return np.rint(scaled).astype(np.uint8)


def _tag_number(header: DicomHeader, name: str) -> float | None:
    """A numeric tag; InputError when it is present but not a finite number."""
    raw = getattr(header.dataset, name, None)
    value = _first(raw)
    if raw is not None and raw != "" and (value is None or not math.isfinite(value)):
        raise InputError(f"{header.path}: DICOM {name} is {raw!r}, not a finite number")
    return value


#: Of the values of a grey frame, the share left out at each end when no window is given:
#: one hot pixel (a detector defect, a burned-in marker) then no longer darkens the slice.
CLIP_PERCENT = 0.1


@dataclass(frozen=True)
class DicomPicture:
    """The picture of one frame and what the file said about it."""

    picture: np.ndarray  # 8-bit grayscale
    header: DicomHeader
    frame: int  # 1-based
    colourful: float = 0.0  # the share of coloured pixels (:func:`~.preprocess.colourful_share`)


def picture_of_header(header: DicomHeader, frame: int | None = None) -> DicomPicture:
    """Decode one frame of a file whose header is read: rescaled, windowed, 8-bit."""
    with _quiet():
        return _picture(header, frame)


def _window(header: DicomHeader) -> tuple[float, float] | None:
    """The file's own display window as (low, high), or None when it names none."""
    center = _tag_number(header, "WindowCenter")
    width = _tag_number(header, "WindowWidth")
    if width is not None and width < 1:  # PS3.3 C.11.2.1.2: the width is at least 1
        raise InputError(f"{header.path}: DICOM WindowWidth is {width:g} (it must be at least 1)")
    if center is None or width is None:
        return None
    return center - width / 2, center + width / 2


def _colour_picture(header: DicomHeader, rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """A colour frame as the PNG of it would be seen: its values are display values already,
    so no rescale and no window (a CT-tagged screenshot windowed at 40/400 came out blank)."""
    from PIL import Image

    from .preprocess import colourful_share

    bits = _int(header.dataset, "BitsStored", 8)
    values = rgb.astype(np.float32) * (255.0 / (2 ** bits - 1) if 8 < bits <= 16 else 1.0)
    rgb8 = np.rint(np.clip(values, 0, 255)).astype(np.uint8)
    im = Image.fromarray(rgb8[..., :3], "RGB")
    return np.asarray(im.convert("L"), dtype=np.uint8), colourful_share(im)


def _range(values: np.ndarray) -> tuple[float, float]:
    """The values' range, less :data:`CLIP_PERCENT` at each end (all of it when that is flat)."""
    low, high = (float(v) for v in np.percentile(values, [CLIP_PERCENT, 100 - CLIP_PERCENT]))
    return (low, high) if high > low else (float(values.min()), float(values.max()))


def _windowed(values: np.ndarray, windows: Sequence[tuple[float, float]], ranged: np.ndarray) -> np.ndarray:
    """A CT frame through the first window that leaves a slice to see: the file's own, else
    40/400; a window that saturates a frame whose values vary (a narrow window made for another
    region: pydicom's C30/W100 test CTs turned white) gives way to the next, and the frame's
    range (``ranged``) is the last resort."""
    from .preprocess import MIN_GREY_LEVELS, grey_levels

    for low, high in windows:
        picture = _to_uint8(values, low, high)
        if grey_levels(picture) >= MIN_GREY_LEVELS or grey_levels(ranged) < MIN_GREY_LEVELS:
            return picture
    return ranged


def _picture(header: DicomHeader, frame: int | None) -> DicomPicture:
    path = header.path
    slope = _tag_number(header, "RescaleSlope")
    intercept = _tag_number(header, "RescaleIntercept")
    if slope == 0:
        raise InputError(f"{path}: DICOM RescaleSlope is 0")
    window = _window(header) if header.modality == "CT" else None
    values, number = _frame(header, frame)
    if values.ndim == 3:
        picture, colourful = _colour_picture(header, values)
        return DicomPicture(picture=picture, header=header, frame=number, colourful=colourful)
    values = values * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    picture = _to_uint8(values, *_range(values))
    if header.modality == "CT":
        center, width = DEFAULT_CT_WINDOW
        windows = [w for w in (window, (center - width / 2, center + width / 2)) if w is not None]
        picture = _windowed(values, windows, picture)
    if str(getattr(header.dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        picture = 255 - picture
    return DicomPicture(picture=picture, header=header, frame=number)


def read_dicom(path: Path, frame: int | None = None) -> np.ndarray:
    """The 8-bit grayscale picture of a DICOM file; InputError when it holds no usable image."""
    return picture_of_header(read_header(path), frame).picture
