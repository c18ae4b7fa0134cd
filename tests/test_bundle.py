"""Bundles: complete, verifiable, packable, and opened without writing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from medpix_tui.bundle import open_bundle, pack_bundle, verify_bundle
from medpix_tui.cli import main
from medpix_tui.errors import BundleError, OutputExistsError
from tests.support import tree_digest


def test_manifest_of_real_bundle(real_bundle) -> None:
    m = real_bundle.manifest
    assert m["format_version"] == 1
    assert m["counts"]["Image_Descriptions"] == 2050 and m["counts"]["Clinical_Reports"] == 671
    assert (m["counts"]["images_ct"], m["counts"]["images_mr"]) == (1062, 988)
    assert m["counts"]["splits"] == {"train": 1653, "dev": 197, "test": 200}
    assert set(m["source"]["digests"]) >= {"Case_topic.json", "Descriptions.json"}
    files = m["files"]
    assert sum(p.startswith("images/") for p in files) == 2050
    assert ({"parquet/images.parquet", "parquet/cases.parquet", "parquet/image_reports.parquet", "search.sqlite"}
            <= set(files))
    assert any(p.startswith("store/") for p in files)


def test_verify_ok_then_names_each_tampered_file(real_bundle_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["bundle", "verify", str(real_bundle_path)])
    n_files = len(json.loads((real_bundle_path / "manifest.json").read_text())["files"])
    assert ok.exit_code == 0 and f"OK: {n_files} files checked" in ok.output
    copy = tmp_path / "b"
    shutil.copytree(real_bundle_path, copy)
    image = next((copy / "images").iterdir())
    data = bytearray(image.read_bytes())
    data[100] ^= 1
    image.write_bytes(bytes(data))
    (copy / "parquet" / "cases.parquet").unlink()
    (copy / "extra.txt").write_text("x")
    result = runner.invoke(main, ["bundle", "verify", str(copy)])
    assert result.exit_code == 1
    assert f"changed: images/{image.name}" in result.output
    assert "missing: parquet/cases.parquet" in result.output
    assert "added: extra.txt" in result.output


def test_manifest_change_is_named(real_bundle_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(real_bundle_path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["counts"]["Image_Descriptions"] = 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert verify_bundle(copy).changed == ["manifest.json"]


def test_pack_and_open_archive(real_bundle_path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDPIX_CACHE", str(tmp_path / "cache"))
    archive = pack_bundle(real_bundle_path, tmp_path / "medpix.tar")
    with pytest.raises(OutputExistsError):
        pack_bundle(real_bundle_path, archive)
    bundle = open_bundle(archive)
    assert bundle.store.count("Image_Descriptions", {"Type": "MR"}) == 988
    bundle.close()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 3])
    with pytest.raises(BundleError, match="damaged or not a bundle archive|does not verify"):
        open_bundle(truncated)
    result = CliRunner().invoke(main, ["query", "--bundle", str(truncated), "--json"])
    assert result.exit_code == 2 and result.output.startswith("error: ")


def test_query_from_read_only_bundle_as_nobody(real_bundle_path: Path, tmp_path: Path) -> None:
    """A read-only bundle serves queries, checked as a non-root user (root ignores permissions)."""
    ro = tmp_path / "ro"
    shutil.copytree(real_bundle_path, ro)
    before = tree_digest(ro)
    for path in [ro, *ro.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:
        if parent != Path("/") and os.stat(parent).st_mode & 0o005 != 0o005:
            parent.chmod(os.stat(parent).st_mode | 0o005)
    code = ("import sys, json; from medpix_tui.bundle import open_bundle; b = open_bundle(sys.argv[1]); "
            "print(json.dumps([b.store.count('Image_Descriptions', {'Type': 'CT'}),"
            " len(b.store.keyword_search('glioma', limit=5)),"
            " b.store.get_case('MPX1009')['U_id']]))")
    cmd = [sys.executable, "-c", code, str(ro)]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HOME": str(tmp_path)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [1062, 5, "MPX1009"]
    assert tree_digest(ro) == before


def test_build_refuses_existing_output(real_bundle_path: Path) -> None:
    before = tree_digest(real_bundle_path / "parquet")
    result = CliRunner().invoke(main, ["bundle", "build", "--source", "x", "--out", str(real_bundle_path)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert tree_digest(real_bundle_path / "parquet") == before


def test_info_json(real_bundle_path: Path) -> None:
    result = CliRunner().invoke(main, ["bundle", "info", str(real_bundle_path), "--json"])
    info = json.loads(result.output)
    assert info["counts"]["Clinical_Reports"] == 671 and info["format_version"] == 1
    model_files = [p for d in ("model", "embeddings") if (real_bundle_path / d).is_dir()
                   for p in (real_bundle_path / d).rglob("*") if p.is_file()]
    assert info["files"] == 2070 + len(model_files) and (len(model_files) > 0) == bool(info["model"])


def test_a_failed_model_copy_is_one_readable_reason() -> None:
    # copytree raises shutil.Error with a list of (source, destination, why); its str() is that list
    import shutil

    from medpix_tui.bundle import _write_failed

    failed = shutil.Error([("/m/open_clip_model.safetensors", "/b/x", "[Errno 27] File too large: '/b/x'")])
    assert _write_failed(failed) == "File too large: '/b/x'"


def test_a_source_without_splits_is_built_with_a_warning(tmp_path: Path) -> None:
    """Without splitted_dataset/uid_list.json no case has a split: the build said nothing of it."""
    from tests.support import write_source

    plain = write_source(tmp_path / "plain")
    split = write_source(tmp_path / "split", splits={"train": ["T1"], "dev": [], "test": ["T2"]})
    for src, warned in ((plain, True), (split, False)):
        result = CliRunner().invoke(main, ["bundle", "build", "--source", str(src), "--out", str(src) + "-b",
                                           "--no-model"])
        assert result.exit_code == 0, result.output
        warning = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
        assert warning == ([f"warning: {src} has no splitted_dataset/uid_list.json: no case of this bundle has a "
                            "split (train/dev/test), so --split and split-based exports find none"] if warned else [])
    assert open_bundle(str(plain) + "-b").manifest["counts"]["splits"] == {"none": 3}  # images
