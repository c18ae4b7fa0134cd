"""Turn an image file into the model's input, identically at training and at use.

Every path into the model (the training pack, ``classify``, ``eval``, the bundle's
embeddings) goes through :func:`load_square`, so a PNG scores the same wherever it is
seen: 8-bit grayscale, longest side resized to the model's size, centred on black.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, UnidentifiedImageError

from ..errors import InputError, brief
from ..files import check_file
from ..progress import Progress
from ..source import MIN_SIDE
from .dicom import WARNINGS_LOCK, DicomHeader, frame_number, is_dicom, picture_of_header, read_dicom, read_header

Image.MAX_IMAGE_PIXELS = 64_000_000
#: The largest PNG or JPEG decoded for the model, checked from the file's header before
#: decoding: 36 megapixels (6000 x 6000) decode within a few hundred MB; the 11000 x 11000
#: PNG of 118 KB an attacker sent decoded at 1.75 GB RSS.
MAX_IMAGE_PIXELS = 36_000_000


def _pil_gray(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # high bit depth: min-max to 8 bits
        values = np.asarray(im, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            return np.zeros(values.shape, np.uint8)
        return np.rint((values - low) / (high - low) * 255.0).astype(np.uint8)
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA")
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, im)
    return np.asarray(im.convert("L"), dtype=np.uint8)


def picture_of(im: Image.Image, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The model's picture of an already decoded image (what :func:`load_square` gives for its
    file) and its :func:`picture_facts`: what ``bundle build`` keeps of each image it validates."""
    gray = _pil_gray(im)
    return square(gray, size), picture_facts(gray, colourful_share(im))


def picture_facts(gray: np.ndarray, colourful: float) -> dict[str, Any]:
    """What classify's rules read of a picture beside the model (:class:`ModelInput`'s fields)."""
    return {"colourful": colourful, "blank": blank_level(gray), "levels": grey_levels(gray)}


#: How PNG and JPEG files begin: a picture named .dcm is read as the picture it is.
_PICTURE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def _is_dicom_file(path: Path) -> bool:
    """DICOM by its marker, or by its name unless its first bytes say PNG or JPEG."""
    if is_dicom(path):
        return True
    if path.suffix.lower() not in (".dcm", ".dicom"):
        return False
    with open(path, "rb") as f:
        return not f.read(8).startswith(_PICTURE_SIGNATURES)


def load_gray(path: Path) -> np.ndarray:
    """An image file (PNG, JPEG or DICOM) as an 8-bit grayscale array."""
    path = Path(path)
    check_file(path)
    if _is_dicom_file(path):
        return read_dicom(path)
    return _read_picture(path)


def _open_checked(path: Path) -> Image.Image:
    """Open an image lazily and check its size from the header: nothing is decoded yet."""
    try:
        with WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: image is larger than the {MAX_IMAGE_PIXELS:,} pixels this tool decodes") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable PNG, JPEG or DICOM image ({brief(exc, path)})") from None
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise InputError(f"{path}: image of {w}x{h} pixels is larger than the {MAX_IMAGE_PIXELS:,} pixels "
                         "this tool decodes")
    if min(w, h) < MIN_SIDE:
        im.close()
        raise InputError(f"{path}: image of {w}x{h} pixels is too small to classify (at least {MIN_SIDE}x{MIN_SIDE})")
    return im


#: A pixel is coloured when its channels differ by more than this (of 255).
CHROMA = 40


def colourful_share(im: Image.Image) -> float:
    """The share of a picture's pixels that are coloured: 0 for grey pictures.

    CT and MR slices are grey: of the release's 2,050 PNGs the most coloured (a colour
    overlay) has 35% of its pixels coloured, the next 2%; colour photographs have 60 to 86%.
    """
    if im.mode not in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return 0.0
    # max - min over the channels, in PIL's C loops: 15x numpy's axis reductions (bundle build
    # runs it on every colour PNG of the release), the same shares to the bit
    r, g, b = im.convert("RGB").split()
    spread = ImageChops.subtract(ImageChops.lighter(ImageChops.lighter(r, g), b),
                                 ImageChops.darker(ImageChops.darker(r, g), b))
    return float(sum(spread.histogram()[CHROMA + 1:]) / (im.width * im.height))


def _read_picture(path: Path) -> np.ndarray:
    return _read_picture_and_colour(path)[0]


def _read_picture_and_colour(path: Path, frame: int | None = None) -> tuple[np.ndarray, float, int, int]:
    """A picture file's grey picture and colour share, and which of its pages (1-based) of how
    many: a multi-page TIFF (or an animated PNG or GIF) is read at its middle page, as a DICOM
    file at its middle frame, unless ``frame`` names one."""
    im = _open_checked(path)
    try:
        with im:
            pages = max(int(getattr(im, "n_frames", 1) or 1), 1)
            number = pages // 2 + 1 if frame is None else frame
            if not 1 <= number <= pages:
                raise InputError(f"{path}: --frame {number} is out of range (the file has {pages} "
                                 f"page{'s' if pages > 1 else ''})")
            if number > 1:
                im.seek(number - 1)
            im.load()
            return _pil_gray(im), colourful_share(im), number, pages
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable PNG, JPEG or DICOM image ({brief(exc, path)})") from None
    except MemoryError:
        raise InputError(f"{path}: image too large to decode") from None


def blank_level(gray: np.ndarray) -> int | None:
    """The one grey level of a blank picture, else None: nothing in it is a slice, though the
    model would still answer it (a black square reads as MR, 94%)."""
    return int(gray.flat[0]) if gray.size and gray.min() == gray.max() else None


#: A grey level counts when it holds more than this share of a picture's pixels.
LEVEL_SHARE = 0.001
#: A picture with fewer grey levels (:func:`grey_levels`) is a mask, a drawing or a phantom:
#: pydicom's SEG mask and scikit-image's blobs, horse, checkerboard and Shepp-Logan phantom
#: have 2 to 8; the train and dev images 26 at the least.
MIN_GREY_LEVELS = 12


def grey_levels(gray: np.ndarray) -> int:
    """How many grey levels hold more than 0.1% of a picture's pixels: a slice has many (of
    the train and dev images, 26 at the least, most over 100), a segmentation mask, a line
    drawing or a phantom a handful (2 to 8)."""
    least = LEVEL_SHARE * gray.size  # PIL's histogram: half numpy's bincount time, on every image of a build
    return sum(1 for n in Image.fromarray(gray).histogram() if n > least)


def square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize so the longest side is ``size`` (bicubic) and centre on a black square."""
    h, w = gray.shape
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(Image.fromarray(gray).resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.uint8)
    out = np.zeros((size, size), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


@dataclass(frozen=True)
class ModelInput:
    """One file as the model sees it, and what a DICOM file says about itself."""

    path: Path
    picture: np.ndarray | None  # size x size 8-bit; None for a DICOM whose Modality is not CT or MR
    dicom_modality: str | None  # a DICOM file's Modality tag ('' when absent); None for PNG and JPEG
    frame: int | None = None  # 1-based frame of a DICOM file
    frames: int | None = None
    colourful: float = 0.0  # :func:`colourful_share` of the picture (a colour DICOM's too)
    blank: int | None = None  # :func:`blank_level` of the picture (a DICOM's as windowed)
    levels: int = 256  # :func:`grey_levels` of the picture (a DICOM's as windowed)
    study_uid: str | None = None  # a DICOM file's StudyInstanceUID and SeriesInstanceUID
    series_uid: str | None = None


def load_input(path: Path, size: int, frame: int | None = None) -> ModelInput:
    """Read a file for classification: a DICOM file tagged other than CT or MR is not decoded."""
    path = Path(path)
    check_file(path)
    if _is_dicom_file(path):
        return _dicom_input(read_header(path), size, frame)
    gray, colourful, number, pages = _read_picture_and_colour(path, frame)
    return ModelInput(path, square(gray, size), None, number, pages, **picture_facts(gray, colourful))


def _dicom_input(header: DicomHeader, size: int, frame: int | None) -> ModelInput:
    """One frame of a DICOM file whose header is read (a study reads several from one header)."""
    frame_number(header, frame)  # a file of another modality is not decoded, but its frames are counted
    study, series = _uid(header.dataset, "StudyInstanceUID"), _uid(header.dataset, "SeriesInstanceUID")
    if header.modality and not header.is_ct_or_mr:
        return ModelInput(header.path, None, header.modality, None, header.frames, study_uid=study,
                          series_uid=series)
    decoded = picture_of_header(header, frame)
    return ModelInput(header.path, square(decoded.picture, size), header.modality, decoded.frame, header.frames,
                      study_uid=study, series_uid=series, **picture_facts(decoded.picture, decoded.colourful))


#: The most frames of one multi-frame DICOM file a study pools, evenly spaced: an enhanced
#: CT or MR file holds a whole series, and its middle frame alone is one slice of it.
STUDY_FRAMES = 9


def load_study_inputs(path: Path, size: int, frame: int | None = None) -> list[ModelInput]:
    """A file read for a study: one input, or up to :data:`STUDY_FRAMES` of a multi-frame
    file's frames (first to last, evenly spaced) unless ``frame`` names one; a DICOM file's
    header is read once for all of them."""
    path = Path(path)
    check_file(path)
    header = read_header(path) if _is_dicom_file(path) else None

    def load(number: int | None) -> ModelInput:
        return load_input(path, size, number) if header is None else _dicom_input(header, size, number)

    first = load(frame)
    frames = first.frames or 1
    if frame is not None or frames == 1 or first.picture is None:
        return [first]
    picks = sorted({int(k) for k in np.linspace(1, frames, min(frames, STUDY_FRAMES)).round()})
    return [first if k == first.frame else load(k) for k in picks]


def _uid(ds: object, name: str) -> str | None:
    value = str(getattr(ds, name, "") or "").strip()
    return value or None


def load_square(path: Path, size: int) -> np.ndarray:
    """The model's picture of an image file: ``size`` x ``size`` 8-bit grayscale."""
    return square(load_gray(path), size)


def load_many(paths: Sequence[Path], size: int, workers: int = 2) -> np.ndarray:
    """:func:`load_square` of many files, in threads (PNG decoding releases the GIL)."""
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(lambda p: load_square(p, size), paths))
    return np.stack(arrays) if arrays else np.zeros((0, size, size), np.uint8)


def encode_files_prefetched(paths: Sequence[Path], size: int, chunk: int,
                            encode: Callable[[np.ndarray], np.ndarray], progress: Progress) -> np.ndarray:
    """``encode`` of the pictures of ``paths`` (at least one), ``chunk`` files at a time.

    The next chunk decodes in a thread while ``encode`` runs on this one, so decoding and
    the model overlap; both encoders (torch and numpy) embed files this way.
    """
    chunks = [paths[start:start + chunk] for start in range(0, len(paths), chunk)]
    out = []
    with progress("Embedding images", len(paths)) as advance, ThreadPoolExecutor(1) as reader:
        pending = reader.submit(load_many, chunks[0], size)
        for i, part in enumerate(chunks):
            pictures = pending.result()
            if i + 1 < len(chunks):
                pending = reader.submit(load_many, chunks[i + 1], size)
            out.append(encode(pictures))
            advance(len(part))
    return np.concatenate(out)
