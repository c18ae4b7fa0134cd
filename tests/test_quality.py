"""The quality report: vocabulary, conflicts, duplicates and leakage, on the release and on planted pairs."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from medpix_tui.bundle import Bundle, build_bundle, open_bundle
from medpix_tui.quality import NEAR, duplicates, quality_report, render_html
from medpix_tui.vocabulary import clean, clean_age, clean_modality, clean_plane, clean_sex, modality_family
from tests.support import tiny_case, tiny_image, write_source


def test_raw_values_map_to_one_clean_value() -> None:
    assert clean_modality(" MR - Montage of Images") == clean_modality("MR - Montage of Images") == "MR - Montage"
    assert clean_modality("MRI") == "MR" and modality_family("MRI") == "MR"
    assert modality_family("CTA - CT Angiography") == "CT" and modality_family("Drawing") == "other"
    assert clean_plane("Transverse") == "Axial" and clean_plane("NOS - Not specified") is None
    assert clean_sex("N/A") is None and clean_sex("Female") == "female"
    assert clean_age("9") == 9 and clean_age("89") == 89 and clean_age("N/A") is None and clean_age("400") is None
    assert clean("Description.ACR Codes", "-1.-1") is None and clean("Description.ACR Codes", "8.-1") == "8.-1"
    assert clean("Case.Title", " kept as is ") == " kept as is "


@pytest.fixture(scope="module")
def release_report(real_bundle: Bundle) -> dict:
    return quality_report(real_bundle)


def test_the_release_report(release_report: dict, real_bundle: Bundle) -> None:
    report = release_report
    assert report["bundle"]["images"] == 2050 and report["bundle"]["cases"] == 671
    modality = {row["raw"]: row for row in report["vocabulary"]["Description.Modality"]}
    assert len(modality) == 29 and sum(r["count"] for r in modality.values()) == 2050
    assert modality[" MR - Montage of Images"]["clean"] == "MR - Montage"
    images_with_placeholder = [r for r in report["conflicts"]["placeholder_code"] if r["image"]]
    assert len(images_with_placeholder) == 99  # the release's -1.-1 image codes
    # the dev image labelled CT whose caption names an MR sequence (found in the GPU session's audit)
    assert any(r["split"] == "dev" and r["type"] == "CT" and "T2" in r["detail"]
               for r in report["conflicts"]["caption_names_other_modality"])
    assert {r["detail"] for r in report["conflicts"]["not_a_slice"]} >= {"plane 'Photograph'"}
    # the same abdominal CT picture filed under two cases, one in train and one in test
    leak = {(p["a"], p["b"]) for p in report["leakage"]["pairs"]}
    assert ("MPX1139_synpic18560", "MPX2540_synpic18534") in leak
    assert {"MPX1139", "MPX2540"} <= set(report["leakage"]["cases"])
    # looked at side by side: the same pictures filed under two cases, in different splits
    assert report["duplicates"]["rule"]["embeddings"]
    assert set(report["leakage"]["cases"]) == {"MPX1139", "MPX2540", "MPX1460", "MPX2385", "MPX1601", "MPX2518"}
    splits = report["splits"]
    assert splits["images"] == {"train": 1653, "dev": 197, "test": 200}
    assert sum(splits["modality"]["CT"].values()) == 1062
    json.dumps(report)  # plain data


def test_a_cosine_threshold_is_used_only_with_the_embeddings_it_was_chosen_on(real_bundle: Bundle) -> None:
    names = ["MPX1139_synpic18560", "MPX2540_synpic18534", "MPX1862_synpic19663", "MPX2266_synpic21019"]
    splits, cases = dict.fromkeys(names, "train"), {n: n.split("_")[0] for n in names}
    own = duplicates(real_bundle, names, splits, cases)
    assert own["rule"]["embeddings"] and {(p["a"], p["b"]) for p in own["near"]} == {tuple(names[:2])}
    other = duplicates(real_bundle, names, splits, cases, replace(NEAR, weights_sha256="0" * 64))
    assert not other["rule"]["embeddings"] and other["near"] == []  # 6 bits apart: the hash alone needs 2


def test_planted_duplicates_across_splits(tmp_path: Path, source_dir: Path) -> None:
    """A re-encoded copy is the same pixels; a brightened copy is a near-duplicate; both leak."""
    first, other = "MPX1007_synpic46719", "MPX1009_synpic46283"
    cases = [tiny_case("T1", ["T1_a", "T1_b"], []), tiny_case("T2", ["T2_a"], []), tiny_case("T3", ["T3_a"], [])]
    images = [tiny_image("T1", "T1_a", "CT"), tiny_image("T1", "T1_b", "CT"), tiny_image("T2", "T2_a", "CT"),
              tiny_image("T3", "T3_a", "CT")]
    src = write_source(tmp_path / "src", cases, images, splits={"train": ["T1"], "dev": ["T3"], "test": ["T2"]},
                       write_images=False)
    picture = Image.open(source_dir / "images" / f"{first}.png")
    picture.save(src / "images" / "T1_a.png", compress_level=9)
    picture.save(src / "images" / "T2_a.png", compress_level=1)  # other bytes, same pixels
    ImageEnhance.Brightness(picture.convert("L")).enhance(1.04).save(src / "images" / "T3_a.png")
    Image.open(source_dir / "images" / f"{other}.png").save(src / "images" / "T1_b.png")
    build_bundle(src, tmp_path / "b", with_model=False)
    report = quality_report(open_bundle(tmp_path / "b"))
    assert report["duplicates"]["exact"] == [{"images": ["T1_a", "T2_a"]}]
    assert not report["duplicates"]["rule"]["embeddings"]
    near = {(p["a"], p["b"]) for p in report["duplicates"]["near"]}
    assert ("T1_a", "T3_a") in near and ("T1_a", "T1_b") not in near
    crossing = {tuple(sorted((p["a"], p["b"]))) for p in report["leakage"]["pairs"]}
    assert ("T1_a", "T2_a") in crossing and ("T1_a", "T3_a") in crossing
    assert report["leakage"]["cases"] == ["T1", "T2", "T3"]


def test_the_html_page_renders_in_chromium(release_report: dict, real_bundle: Bundle, tmp_path: Path) -> None:
    from tests.serve_support import browser, need_browser

    need_browser()
    page_file = tmp_path / "quality.html"
    page_file.write_text(render_html(release_report, real_bundle), encoding="utf-8")
    assert "http://" not in page_file.read_text() and "https://" not in page_file.read_text()  # self-contained
    with browser(tmp_path) as page:
        page.get(page_file.as_uri())
        assert page.title == "MedPix 2.0 quality report"
        rows = page.execute_script("return document.querySelectorAll('table.pairs')[0].rows.length")
        assert rows == len(release_report["leakage"]["pairs"]) + 1
        drawn = page.execute_script(
            "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
        assert drawn > 100
        # the release's 309 near-duplicate pairs pass the page's 300 rows: the page says it cut them
        near = len(release_report["duplicates"]["near"])
        cut = page.execute_script("return Array.from(document.querySelectorAll('p.cut')).map(p => p.textContent)")
        assert near > 300 and f"The first 300 of {near} are shown; report quality --json lists them all." in cut


def test_the_command(real_bundle_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.html"
    run = subprocess.run([sys.executable, "-m", "medpix_tui", "report", "quality", "--bundle", str(real_bundle_path),
                          "--html", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "leakage:" in run.stdout and out.stat().st_size > 10_000
    again = subprocess.run([sys.executable, "-m", "medpix_tui", "report", "quality", "--bundle",
                            str(real_bundle_path), "--html", str(out)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr


def test_facets_read_labels_through_the_vocabulary(real_bundle: Bundle) -> None:
    """One meaning, one facet value: Transverse is Axial; N/A and -1.-1 are "unknown"."""
    from medpix_tui.session import SearchRequest, count_facets, run_search

    store = real_bundle.store
    counts = count_facets(store, run_search(store, SearchRequest()))
    assert "Transverse" not in counts["plane"] and counts["plane"]["Axial"] == 1404 + 16
    assert counts["sex"] == {"male": 1098, "female": 885, "unknown": 67}
    assert "-1.-1" not in counts["acr"] and counts["acr"]["unknown"] == 99
    ticked = run_search(store, SearchRequest(facets={"plane": frozenset({"Axial"})}))
    assert len(ticked.names) == 1420
    assert {store.get_image(n)["Description"]["Plane"] for n in ticked.names} == {"Axial", "Transverse"}


def test_a_damaged_image_is_one_line_naming_verify(tmp_path: Path) -> None:
    """A PNG changed after the build made the report an "internal error" (OSError: broken data stream)."""
    from click.testing import CliRunner

    from medpix_tui.cli import main

    out = build_bundle(write_source(tmp_path / "src"), tmp_path / "b", with_model=False).resolve()
    png = next((out / "images").iterdir())
    png.chmod(0o644)
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0xFF
    png.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["--bundle", str(tmp_path / "b"), "report", "quality"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: damaged bundle: the image "), \
        result.output
    assert "medpix-tui bundle verify" in result.output and "internal error" not in result.output


def test_html_force_replaces_a_report_never_another_file_nor_into_the_bundle(tmp_path: Path) -> None:
    """``--html notes.txt --force`` overwrote a person's notes, and ``--html BUNDLE/x.html`` wrote into the
    bundle (its verify then failed); a second report is the same bytes (no run time on the page)."""
    from click.testing import CliRunner

    from medpix_tui.bundle import verify_bundle
    from medpix_tui.cli import main

    bundle = build_bundle(write_source(tmp_path / "src"), tmp_path / "b", with_model=False)

    def report(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["report", "quality", "--bundle", str(bundle), *args])
        assert "Traceback" not in result.output and "internal error" not in result.output, result.output
        return result.exit_code, result.output

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    code, out = report("--html", str(notes), "--force")
    assert code == 2 and "refusing to replace" in out and "no quality report of this tool" in out, out
    assert notes.read_text() == "my notes"
    code, out = report("--html", str(bundle / "x.html"))
    assert code == 2 and "overlaps the bundle" in out and not (bundle / "x.html").exists(), out
    assert verify_bundle(bundle).ok
    code, out = report("--html", str(tmp_path))
    assert code == 2 and f"e.g. {tmp_path / 'results.html'}" in out, out

    page = tmp_path / "q.html"
    assert report("--html", str(page))[0] == 0
    first = page.read_bytes()
    code, out = report("--html", str(page), "--force")
    assert code == 0 and page.read_bytes() == first, out
    assert "leakage: 0 pairs across splits, touching 0 cases" in out, out
