"""DICOM and image loading: windowing, rescale, MR range, colour, clear errors. Fixtures made with pydicom."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medpix_tui.errors import InputError
from medpix_tui.model.dicom import DEFAULT_CT_WINDOW, is_dicom, read_dicom
from medpix_tui.model.preprocess import load_gray, load_input, load_square, square


def blocks(values: list[list[float]] | np.ndarray, n: int = 4) -> np.ndarray:
    """Each value as an n x n block: test pictures reach the 8-pixel minimum side."""
    return np.kron(np.asarray(values), np.ones((n, n)))


def corners(picture: np.ndarray, n: int = 4) -> list[list[int]]:
    """The value of each n x n block of a picture made by :func:`blocks`."""
    return picture[::n, ::n].tolist()


def write_dicom(path: Path, stored: np.ndarray | None, modality: str = "CT", frames: int | None = None,
                **tags: object) -> Path:
    """A minimal uncompressed DICOM file; ``stored`` None writes no pixel data.

    ``stored`` (frames, rows, cols) with ``frames`` set writes a multi-frame file.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = modality
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if stored is not None and stored.ndim == 3 and frames is None:  # rows x columns x RGB, 8 bits
        ds.Rows, ds.Columns = stored.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = stored.astype(np.uint8).tobytes()
    elif stored is not None:
        ds.Rows, ds.Columns = stored.shape[-2:]
        if frames is not None:
            ds.NumberOfFrames = frames
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = tags.pop("PhotometricInterpretation", "MONOCHROME2")
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = stored.astype(np.int16).tobytes()
    with warnings.catch_warnings():  # the nonsense tags some tests write warn as they are set
        warnings.simplefilter("ignore")
        for key, value in tags.items():
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_ct_rescale_and_file_window(tmp_path: Path) -> None:
    # stored 0..2000 with intercept -1000 -> HU -1000..1000; window 40/400 -> HU -160..240
    stored = np.array([[0, 840], [1040, 2000]])
    path = write_dicom(tmp_path / "ct.dcm", blocks(stored), RescaleSlope=1, RescaleIntercept=-1000,
                       WindowCenter=40, WindowWidth=400)
    picture = read_dicom(path)
    assert picture.dtype == np.uint8
    assert corners(picture) == [[0, 0], [128, 255]]  # -1000 and -160 -> 0, 40 -> middle, 1000 -> 255


def test_ct_slope_and_multivalued_window(tmp_path: Path) -> None:
    stored = np.array([[0, 50], [100, 200]])  # slope 2 -> HU 0, 100, 200, 400
    path = write_dicom(tmp_path / "ct.dcm", blocks(stored), RescaleSlope=2, RescaleIntercept=0,
                       WindowCenter=[200, 40], WindowWidth=[400, 80])
    assert corners(read_dicom(path)) == [[0, 64], [128, 255]]  # the first window, 0..400


def test_ct_without_window_uses_soft_tissue_default(tmp_path: Path) -> None:
    center, width = DEFAULT_CT_WINDOW
    hu = np.array([[center - width / 2, center], [center + width / 2, 3000]])
    path = write_dicom(tmp_path / "ct.dcm", blocks(hu + 1024), RescaleSlope=1, RescaleIntercept=-1024)
    assert corners(read_dicom(path)) == [[0, 128], [255, 255]]


def test_mr_is_scaled_to_its_range_its_window_ignored(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "mr.dcm", blocks([[100, 200], [300, 500]]), modality="MR",
                       WindowCenter=40, WindowWidth=10)  # the module docstring says why
    assert corners(read_dicom(path)) == [[0, 64], [128, 255]]


def test_mr_without_window_is_scaled_to_its_range_less_a_hot_pixel(tmp_path: Path) -> None:
    values = blocks([[100, 200], [300, 500]], 32)
    path = write_dicom(tmp_path / "mr.dcm", values, modality="MR")
    assert corners(read_dicom(path), 32) == [[0, 64], [128, 255]]
    hot = values.copy()
    hot[40, 8] = 30000  # one defect pixel of 4,096
    picture = read_dicom(write_dicom(tmp_path / "hot.dcm", hot, modality="MR"))
    assert corners(picture, 32) == [[0, 64], [128, 255]]  # min-max alone squashes the slice to 0..4


def test_rgb_dicom_is_shown_as_stored_not_windowed(tmp_path: Path) -> None:
    # a secondary-capture screenshot tagged CT: its values are display values, not Hounsfield units
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, 32:] = 200
    rgb[:8, :8] = (255, 0, 0)
    path = write_dicom(tmp_path / "rgb.dcm", rgb, modality="CT", WindowCenter=40, WindowWidth=400)
    item = load_input(path, 64)
    assert item.blank is None
    assert item.picture is not None and int(item.picture[40, 48]) == 200 and int(item.picture[40, 8]) == 0
    assert 0 < item.colourful < 0.05  # the red corner is coloured


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "mr.dcm", blocks([[0, 10], [0, 10]]), modality="MR",
                       PhotometricInterpretation="MONOCHROME1")
    assert corners(read_dicom(path)) == [[255, 0], [255, 0]]


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
    path = write_dicom(tmp_path / "scan_without_suffix", blocks([[0, 10], [0, 10]]), modality="MR")
    assert is_dicom(path)
    assert corners(load_gray(path)) == [[0, 255], [0, 255]]


def test_png_modes_become_8_bit_gray(tmp_path: Path) -> None:
    Image.fromarray(blocks([[0, 1000], [2000, 4000]]).astype(np.uint16)).save(tmp_path / "deep.png")
    assert corners(load_gray(tmp_path / "deep.png")) == [[0, 64], [128, 255]]
    Image.new("RGB", (12, 8), (255, 0, 0)).save(tmp_path / "red.png")
    assert load_gray(tmp_path / "red.png").tolist() == [[76] * 12] * 8
    Image.new("RGBA", (8, 8), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    assert load_gray(tmp_path / "clear.png").max() == 0  # transparent is black, like the background
    Image.new("L", (8, 8), 200).save(tmp_path / "x.jpg")
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


# -- bad and hostile inputs: one clear error, nothing decoded that the header says is too big

def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width`` x ``height`` (a bomb's header; its data never decodes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [20000, 11000, 7000])
def test_huge_png_is_refused_from_its_header(tmp_path: Path, side: int) -> None:
    # the bombs: 20000x20000 (Pillow's DecompressionBombError), 11000x11000 (its
    # warning), and one below Pillow's limit but above classify's own cap
    with pytest.raises(InputError, match="larger than the 36,000,000 pixels"):
        load_gray(_png_header(tmp_path / f"bomb{side}.png", side, side))


def test_tiny_pictures_are_refused(tmp_path: Path) -> None:
    Image.new("L", (1, 1), 9).save(tmp_path / "dot.png")
    with pytest.raises(InputError, match="1x1 pixels is too small"):
        load_gray(tmp_path / "dot.png")
    path = write_dicom(tmp_path / "dot.dcm", np.array([[5]]))
    with pytest.raises(InputError, match="1x1 pixels is too small"):
        read_dicom(path)


@pytest.mark.parametrize(("tags", "message"), [
    ({"RescaleSlope": "NaN"}, "RescaleSlope is 'NaN', not a finite number"),
    ({"RescaleSlope": 0}, "RescaleSlope is 0"),
    ({"RescaleIntercept": "inf"}, "RescaleIntercept is 'inf'"),
    ({"WindowCenter": 40, "WindowWidth": 0}, "WindowWidth is 0 \\(it must be at least 1\\)"),
])
def test_nonsense_tags_are_one_clear_error(tmp_path: Path, tags: dict, message: str,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    path = write_dicom(tmp_path / "odd.dcm", blocks([[0, 10], [20, 30]]), **tags)
    with pytest.raises(InputError, match=message):
        read_dicom(path)
    assert capfd.readouterr().err == ""  # no pydicom or numpy warning on the way


def test_frame_size_is_checked_before_decoding(tmp_path: Path) -> None:
    # the header claims 20000 x 20000; the pixel data is 8 bytes: nothing may be allocated for it
    path = write_dicom(tmp_path / "claim.dcm", np.zeros((2, 2)))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 20000
    ds.save_as(path)
    with pytest.raises(InputError, match="larger than the 16,777,216 this tool decodes"):
        read_dicom(path)


def test_deflated_bomb_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a deflated data set inflates whole in pydicom; above the cap it is refused while streaming
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from medpix_tui.model import dicom

    path = write_dicom(tmp_path / "dfl.dcm", np.zeros((512, 512)))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 10_000  # 512 KB of zeros deflate to a few KB
    assert read_dicom(path).shape == (512, 512)  # within the cap it reads
    monkeypatch.setattr(dicom, "MAX_INFLATED_BYTES", 100_000)
    with pytest.raises(InputError, match="inflates to more than"):
        read_dicom(path)


def test_multi_frame_uses_the_middle_frame_or_the_one_asked(tmp_path: Path) -> None:
    stack = np.stack([blocks([[0, 100 * i], [0, 100 * i]]) for i in range(1, 6)])  # frame i's right half = 100 i
    path = write_dicom(tmp_path / "multi.dcm", stack, modality="MR", frames=5)
    from medpix_tui.model.dicom import picture_of_header, read_header

    header = read_header(path)
    assert header.frames == 5
    middle = picture_of_header(header)
    assert middle.frame == 3 and corners(middle.picture) == [[0, 255], [0, 255]]
    assert picture_of_header(header, 5).frame == 5
    with pytest.raises(InputError, match="--frame 6 is out of range \\(the file has 5 frames\\)"):
        picture_of_header(header, 6)


def test_missing_decoder_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.data import get_testdata_file

    from medpix_tui.model import dicom

    class Unavailable:
        is_available = False

    import pydicom.pixels

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    message = "needs the pylibjpeg-libjpeg package \\(pip install pylibjpeg pylibjpeg-libjpeg\\)"
    with pytest.raises(InputError, match=message):
        dicom.read_dicom(Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")))


def test_pydicom_compressed_ct_and_mr_files_decode() -> None:
    # pydicom's own files in JPEG-LS, JPEG 2000 and RLE: the decoders this project installs read them
    from pydicom.data import get_testdata_file

    plain = read_dicom(Path(get_testdata_file("MR_small.dcm")))
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"):
        assert np.array_equal(read_dicom(Path(get_testdata_file(name))), plain), name  # all lossless
    assert read_dicom(Path(get_testdata_file("693_J2KI.dcm"))).shape == (512, 512)


def test_dicom_without_its_file_header_is_read(tmp_path: Path) -> None:
    # pydicom's own CT slice as older writers leave it: no 128-byte preamble, or no file meta at all
    import pydicom
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    expected = read_dicom(Path(ct))
    for name, drop_meta in (("no-preamble.dcm", False), ("no-meta.dcm", True)):
        ds = pydicom.dcmread(ct)
        ds.preamble = None
        if drop_meta:
            del ds.file_meta
        pydicom.dcmwrite(tmp_path / name, ds, enforce_file_format=False)
        assert not is_dicom(tmp_path / name)
        assert np.array_equal(read_dicom(tmp_path / name), expected)


def test_a_picture_named_dcm_is_read_as_the_picture(tmp_path: Path) -> None:
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)).save(tmp_path / "p.png")
    (tmp_path / "p.dcm").write_bytes((tmp_path / "p.png").read_bytes())
    assert np.array_equal(load_gray(tmp_path / "p.dcm"), load_gray(tmp_path / "p.png"))


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file is empty"),
    (b"<html>not a scan</html>" * 40, r"not a DICOM file \(no DICOM header, and no data set without one"),
], ids=["empty", "html"])
def test_a_dcm_that_is_not_dicom_is_one_clear_line(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "x.dcm").write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        load_gray(tmp_path / "x.dcm")
    assert "\n" not in str(err.value) and not str(err.value).endswith(("missi", "-"))
