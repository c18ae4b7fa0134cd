"""DICOM and image loading: windowing, rescale, MR min-max, clear errors. Fixtures made with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medpix_tui.errors import InputError
from medpix_tui.model.dicom import DEFAULT_CT_WINDOW, is_dicom, read_dicom
from medpix_tui.model.preprocess import load_gray, load_square, square


def write_dicom(path: Path, stored: np.ndarray | None, modality: str = "CT", **tags: object) -> Path:
    """A minimal uncompressed DICOM file; ``stored`` None writes no pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = modality
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if stored is not None:
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = tags.pop("PhotometricInterpretation", "MONOCHROME2")
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = stored.astype(np.int16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_ct_rescale_and_file_window(tmp_path: Path) -> None:
    # stored 0..2000 with intercept -1000 -> HU -1000..1000; window 40/400 -> HU -160..240
    stored = np.array([[0, 840], [1040, 2000]])
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1000,
                       WindowCenter=40, WindowWidth=400)
    picture = read_dicom(path)
    assert picture.dtype == np.uint8
    assert picture.tolist() == [[0, 0], [128, 255]]  # -1000 and -160 -> 0, 40 -> middle, 1000 -> 255


def test_ct_slope_and_multivalued_window(tmp_path: Path) -> None:
    stored = np.array([[0, 50], [100, 200]])  # slope 2 -> HU 0, 100, 200, 400
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=0,
                       WindowCenter=[200, 40], WindowWidth=[400, 80])
    assert read_dicom(path).tolist() == [[0, 64], [128, 255]]  # the first window, 0..400


def test_ct_without_window_uses_soft_tissue_default(tmp_path: Path) -> None:
    center, width = DEFAULT_CT_WINDOW
    hu = np.array([[center - width / 2, center], [center + width / 2, 3000]])
    path = write_dicom(tmp_path / "ct.dcm", hu + 1024, RescaleSlope=1, RescaleIntercept=-1024)
    assert read_dicom(path).tolist() == [[0, 128], [255, 255]]


def test_mr_is_min_max_scaled(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "mr.dcm", np.array([[100, 200], [300, 500]]), modality="MR",
                       WindowCenter=40, WindowWidth=10)  # a window on MR is ignored
    assert read_dicom(path).tolist() == [[0, 64], [128, 255]]


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "mr.dcm", np.array([[0, 10]]), modality="MR", PhotometricInterpretation="MONOCHROME1")
    assert read_dicom(path).tolist() == [[255, 0]]


def test_dicom_without_pixel_data_is_an_input_error(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "empty.dcm", None)
    with pytest.raises(InputError, match="no pixel data"):
        read_dicom(path)


def test_garbage_files_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom at all")
    with pytest.raises(InputError):
        load_gray(bad)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a readable"):
        load_gray(text)
    with pytest.raises(InputError, match="no such file"):
        load_gray(tmp_path / "missing.png")


def test_dicom_is_found_by_content_not_name(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "scan_without_suffix", np.array([[0, 10]]), modality="MR")
    assert is_dicom(path)
    assert load_gray(path).tolist() == [[0, 255]]


def test_png_modes_become_8_bit_gray(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)).save(tmp_path / "deep.png")
    assert load_gray(tmp_path / "deep.png").tolist() == [[0, 64], [128, 255]]
    Image.new("RGB", (3, 2), (255, 0, 0)).save(tmp_path / "red.png")
    assert load_gray(tmp_path / "red.png").tolist() == [[76] * 3] * 2
    Image.new("RGBA", (2, 2), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    assert load_gray(tmp_path / "clear.png").max() == 0  # transparent is black, like the background
    Image.new("L", (4, 4), 200).save(tmp_path / "x.jpg")
    assert abs(int(load_gray(tmp_path / "x.jpg")[0, 0]) - 200) <= 2


def test_square_keeps_aspect_and_centres() -> None:
    wide = np.full((10, 40), 255, np.uint8)
    out = square(wide, 32)
    assert out.shape == (32, 32)
    rows = np.where(out.max(axis=1) > 0)[0]
    assert rows.min() == 12 and rows.max() == 19  # 8 rows of picture, centred
    assert out[:, 0].max() == 255 and out[:, 31].max() == 255


def test_load_square_of_dicom(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "mr.dcm", np.arange(64).reshape(8, 8), modality="MR")
    picture = load_square(path, 16)
    assert picture.shape == (16, 16) and picture.dtype == np.uint8
    assert picture[0, 0] < 10 and picture[15, 15] > 245
