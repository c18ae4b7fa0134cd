"""Helpers for tests: tiny source folders written from scratch, and snapshots of folders."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image


def tiny_case(uid: str, ct: list[str], mr: list[str]) -> dict[str, Any]:
    """A case document in the release's schema (made-up text)."""
    return {"U_id": uid, "TAC": ct, "MRI": mr,
            "Case": {"Title": f"Test case {uid}", "History": "made-up history", "Findings": "made-up findings",
                     "Case Diagnosis": "made-up diagnosis"},
            "Topic": {"Title": "Made-up topic", "Disease Discussion": "made-up discussion", "ACR Code": "1.2",
                      "Category": "Test"}}


def tiny_image(uid: str, name: str, modality: str, caption: str = "made-up caption") -> dict[str, Any]:
    """An image document in the release's schema (made-up text)."""
    return {"Type": modality, "U_id": uid, "image": name,
            "Description": {"ACR Codes": "1.2", "Age": "40", "Caption": caption, "Figure Part": None,
                            "Modality": f"{modality} - test", "Plane": "Axial", "Sex": "female"},
            "Location": "Brain", "Location Category": "Head"}


def write_source(root: Path, cases: list[Any] | None = None, images: list[Any] | None = None,
                 splits: dict[str, list[str]] | None = None, write_images: bool = True) -> Path:
    """Write a small valid source folder (2 cases, 3 images) or the documents given."""
    if cases is None:
        cases = [tiny_case("T1", ["T1_a"], ["T1_b"]), tiny_case("T2", ["T2_a"], [])]
    if images is None:
        images = [tiny_image("T1", "T1_a", "CT", "ring enhancing lesion"), tiny_image("T1", "T1_b", "MR"),
                  tiny_image("T2", "T2_a", "CT", "fracture of the femur")]
    root.mkdir(parents=True, exist_ok=True)
    (root / "Case_topic.json").write_text(json.dumps(cases))
    (root / "Descriptions.json").write_text(json.dumps(images))
    if splits is not None:
        (root / "splitted_dataset").mkdir(exist_ok=True)
        (root / "splitted_dataset" / "uid_list.json").write_text(json.dumps(splits))
    (root / "images").mkdir(exist_ok=True)
    if write_images:
        for i, doc in enumerate(images):
            if isinstance(doc, dict) and isinstance(doc.get("image"), str) and "/" not in doc["image"]:
                Image.new("L", (16, 16), color=i * 40 % 255).save(root / "images" / f"{doc['image']}.png")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 for every file under ``root`` (to prove nothing changed)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def check_one_file_save(bundle: Any, path: Path, again: Path) -> dict[str, Any]:
    """A one-file save has ``<file>.manifest.json``, ``export verify`` accepts it and ``--from-manifest`` redoes it.

    ``again`` is where the reproduction goes; it must hold the same bytes. Returns the manifest.
    """
    from click.testing import CliRunner

    from medpix_tui.cli import main
    from medpix_tui.export import MANIFEST_SUFFIX, verify_export

    manifest_file = path.with_name(path.name + MANIFEST_SUFFIX)
    assert manifest_file.is_file(), f"no manifest beside {path}"
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    assert manifest["bundle"]["manifest_sha256"] == bundle.digest
    assert manifest["files"] == {path.name: {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                             "size": path.stat().st_size}}
    assert verify_export(path) == []
    verified = CliRunner().invoke(main, ["export", "verify", str(path)])
    assert verified.exit_code == 0, verified.output
    redone = CliRunner().invoke(main, ["export", "--bundle", str(bundle.path), "--from-manifest", str(manifest_file),
                                       "--out", str(again)])
    assert redone.exit_code == 0, redone.output
    assert again.read_bytes() == path.read_bytes(), f"--from-manifest did not reproduce {path.name}"
    return manifest


def read_until_closed(fd: int) -> bytes:
    """Everything a pseudo-terminal's leader gives until the child's end closes, read as it comes
    (a full pty would block the child)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: closed, and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
