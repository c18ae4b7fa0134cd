"""Bundle integrity: every changed byte is named by ``bundle verify``; damaged archives are refused;
a read-only bundle serves the library, the CLI, SQL and the TUI to a user who cannot write it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from medpix_tui.bundle import MANIFEST, MANIFEST_SUM, build_bundle, open_bundle, pack_bundle, verify_bundle
from medpix_tui.cli import main
from medpix_tui.errors import BundleError
from tests.support import tree_digest, write_source

ROOT = Path(__file__).resolve().parents[1]
SEED = 20240606


def link_copy(src: Path, dst: Path) -> Path:
    """A copy of ``src`` made of hard links (instant); mutate files only by replacing them."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    return dst


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    """Flip bits of one byte of ``path`` in a new file (hard-linked originals stay intact)."""
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= mask
    path.unlink()
    path.write_bytes(bytes(data))


KINDS = {
    "manifest": lambda b: [b / MANIFEST],
    "manifest-sum": lambda b: [b / MANIFEST_SUM],
    "store": lambda b: sorted(p for p in (b / "store").rglob("*") if p.is_file()),
    "image": lambda b: sorted((b / "images").iterdir()),
    "parquet": lambda b: sorted((b / "parquet").iterdir()),
    "search-index": lambda b: [b / "search.sqlite"],
    "model": lambda b: sorted(p for p in (b / "model").rglob("*") if p.is_file()) if (b / "model").is_dir() else [],
    "embeddings": lambda b: (sorted(p for p in (b / "embeddings").rglob("*") if p.is_file())
                             if (b / "embeddings").is_dir() else []),
}


def named_as(bundle: Path, path: Path) -> set[str]:
    """The verify lines that name a change to ``path``: a changed digest in manifest.json.sha256 names the manifest."""
    rel = path.relative_to(bundle).as_posix()
    return {f"changed: {MANIFEST}", f"changed: {MANIFEST_SUM}"} if rel == MANIFEST_SUM else {f"changed: {rel}"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_verify_names_one_flipped_byte_in_each_kind_of_file(kind: str, real_bundle_path: Path, tmp_path: Path) -> None:
    copy = link_copy(real_bundle_path, tmp_path / "b")
    files = KINDS[kind](copy)
    if not files:
        pytest.skip(f"the session bundle has no {kind} files (no model checkpoint ships yet)")
    rng = random.Random(f"{SEED}-{kind}")
    target = rng.choice(files)
    flip(target, rng.randrange(target.stat().st_size), 1 << rng.randrange(8))
    result = CliRunner().invoke(main, ["bundle", "verify", str(copy)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("FAILED:"), result.output
    if kind == "manifest":  # the manifest is named; what a changed digest or name in it now mismatches may be too
        assert named_as(copy, target) & set(lines[:-1]), result.output
    else:
        assert len(lines) == 2 and lines[0] in named_as(copy, target) and "1 changed" in lines[-1], result.output


def test_every_file_mutated_at_once_is_named(real_bundle_path: Path, tmp_path: Path) -> None:
    """One flipped byte in every non-image file and 40 images, one truncated and one grown file: all named."""
    copy = link_copy(real_bundle_path, tmp_path / "b")
    rng = random.Random(SEED)
    images = sorted((copy / "images").iterdir())
    others = [p for p in sorted(copy.rglob("*")) if p.is_file() and p.parent != copy / "images"
              and p.name not in (MANIFEST, MANIFEST_SUM)]
    targets = others + rng.sample(images, 40)
    for path in targets:
        flip(path, rng.randrange(path.stat().st_size), 1 << rng.randrange(8))
    shrunk, grown = rng.sample([p for p in images if p not in targets], 2)
    data = shrunk.read_bytes()
    shrunk.unlink()
    shrunk.write_bytes(data[:-1])
    data = grown.read_bytes()
    grown.unlink()
    grown.write_bytes(data + b"\0")
    report = verify_bundle(copy)
    expected = sorted(p.relative_to(copy).as_posix() for p in [*targets, shrunk, grown])
    assert sorted(report.changed) == expected
    assert not report.missing and not report.added
    # the figure for the closing note
    print(f"mutations detected: {len(report.changed)} of {len(expected)} tried (+{len(KINDS)} single-kind flips)")


# -- archives ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-archive")
    bundle = build_bundle(write_source(root / "src"), root / "tiny", with_model=False)
    return pack_bundle(bundle, root / "medpix.tar")


def _refused(archive: Path, cache: Path, message: str) -> None:
    """``--bundle ARCHIVE`` fails with one line naming the problem, and leaves nothing in the cache."""
    result = CliRunner().invoke(main, ["query", "--bundle", str(archive), "--json"], env={"MEDPIX_CACHE": str(cache)})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
    leftovers = [p for p in cache.rglob("*") if p != cache / "bundles"] if cache.exists() else []
    assert not leftovers, "a refused archive leaves nothing behind (the empty bundles/ folder aside)"


def _member(archive: Path, name: str) -> tarfile.TarInfo:
    with tarfile.open(archive) as tar:
        return tar.getmember(f"medpix-2.0/{name}")


def test_tampered_archive_member_is_refused(tiny_archive: Path, tmp_path: Path) -> None:
    bad = Path(shutil.copy(tiny_archive, tmp_path / "medpix.tar"))
    member = _member(bad, "images/T1_b.png")
    flip(bad, member.offset_data + member.size // 2)
    _refused(bad, tmp_path / "cache", f"{bad} does not verify: changed: images/T1_b.png")


@pytest.mark.parametrize("name", ["manifest.json", "search.sqlite", "parquet/images.parquet"])
def test_tampered_archive_of_each_kind_is_refused(name: str, tiny_archive: Path, tmp_path: Path) -> None:
    bad = Path(shutil.copy(tiny_archive, tmp_path / "medpix.tar"))
    member = _member(bad, name)
    flip(bad, member.offset_data + member.size - 1)
    _refused(bad, tmp_path / "cache", "does not verify")


def test_the_ui_refuses_a_tampered_archive_before_it_starts(tiny_archive: Path, tmp_path: Path) -> None:
    """``medpix-tui --bundle FILE`` (the terminal UI) stops at the archive with one line, exit status 2."""
    bad = Path(shutil.copy(tiny_archive, tmp_path / "medpix.tar"))
    member = _member(bad, "store/medpix.Image_Descriptions/$.data")
    flip(bad, member.offset_data)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDPIX_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "medpix_tui", "--bundle", str(bad)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {bad} does not verify: changed: store/medpix.Image_Descriptions/$.data\n"


def test_tampered_archive_header_is_refused(tiny_archive: Path, tmp_path: Path) -> None:
    bad = Path(shutil.copy(tiny_archive, tmp_path / "medpix.tar"))
    member = _member(bad, "images/T2_a.png")
    flip(bad, member.offset + 10)  # in the member's name: the header checksum no longer matches
    _refused(bad, tmp_path / "cache", f"{bad} ")


def test_archive_truncated_anywhere_is_refused(tiny_archive: Path, tmp_path: Path) -> None:
    """Cut inside any member, or between two: refused (cutting only the zero padding after the last member
    loses nothing)."""
    with tarfile.open(tiny_archive) as tar:
        members = tar.getmembers()
    end = members[-1].offset_data + members[-1].size
    rng = random.Random(SEED)
    cuts = sorted({*rng.sample(range(1, end), 6), *rng.sample([m.offset for m in members[1:]], 3), 512, end - 1})
    for cut in cuts:
        bad = tmp_path / f"cut-{cut}.tar"
        bad.write_bytes(tiny_archive.read_bytes()[:cut])
        _refused(bad, tmp_path / f"cache-{cut}", f"{bad} ")
        with pytest.raises(BundleError):
            open_bundle(bad)


# -- read-only bundle, non-root user -------------------------------------------------

NOBODY_SCRIPT = r"""
import asyncio, json, sys
from pathlib import Path
from click.testing import CliRunner
from medpix_tui.bundle import open_bundle
from medpix_tui.cli import main
from medpix_tui.export import Selection, export
from medpix_tui.query import field_filter
from medpix_tui.sql import connect, run_sql

ro, home = Path(sys.argv[1]), Path(sys.argv[2])
b = open_bundle(ro)
s = b.store
out = {
    "ct": s.count("Image_Descriptions", {"Type": "CT"}),
    "glioma": [d["image"] for d in s.find("Image_Descriptions", field_filter({"Description.Caption": "glioma"}))],
    "or": s.count("Image_Reports", {"$or": [{"Type": "MR"}, {"Case.Title": {"$regex": "fracture", "$options": "i"}}]}),
    "keyword": [d["image"] for _, d in s.keyword_search("ring enhancing lesion", limit=10)],
    "case": s.get_case("MPX1009")["U_id"],
    "sql": run_sql(connect(b.parquet_dir), "SELECT count(*) FROM images WHERE modality = 'MR'")[1][0][0],
}
sel = Selection.from_query(s, "Image_Descriptions", {"Location Category": "Thorax"})
out["export"] = len(export(s, home / "thorax", "imagefolder", selection=sel, image_path=b.image_path))
r = CliRunner().invoke(main, ["query", "--bundle", str(ro), "--field", "Type=^MR$", "--fields-out", "image"])
out["cli"] = [r.exit_code, len(r.output.splitlines())]
try:
    from medpix_tui.tui.app import MedpixApp
except ImportError:
    MedpixApp = None
if MedpixApp is not None:
    from tui_support import SIZE, settle, type_text

    async def drive():
        app = MedpixApp(b, image_renderer="halfcell", history_path=None, save_dir=home)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            first = len(app.result.names)
            await type_text(pilot, "glioma")
            await settle(pilot, 0.2)
            names = list(app.result.names)
            for key in ("f3", "f4", "f2"):
                await pilot.press(key)
                await settle(pilot)
        return [first, names]

    out["tui"] = asyncio.run(drive())
print(json.dumps(out))
"""


def test_read_only_bundle_serves_everything_to_nobody(real_bundle_path: Path, real_bundle, tmp_path: Path) -> None:
    ro = Path(shutil.copytree(real_bundle_path, tmp_path / "ro"))
    home = tmp_path / "home"
    home.mkdir()
    before = tree_digest(ro)
    for path in [ro, *ro.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    for p in [tmp_path, *tmp_path.parents]:
        if p != Path("/") and os.stat(p).st_mode & 0o005 != 0o005:
            p.chmod(os.stat(p).st_mode | 0o005)
    cmd = [sys.executable, "-c", NOBODY_SCRIPT, str(ro), str(home)]
    if os.geteuid() == 0:
        shutil.chown(home, "nobody", "nogroup")
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "HOME": str(home),
           "TERM": "xterm-256color"}
    env.pop("MEDPIX_MONGO_URI", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=home, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-12000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    from medpix_tui.query import field_filter

    s = real_bundle.store
    glioma = [d["image"] for d in s.find("Image_Descriptions", field_filter({"Description.Caption": "glioma"}))]
    assert got["ct"] == 1062 and got["case"] == "MPX1009" and got["sql"] == 988
    assert got["glioma"] == glioma and glioma
    assert got["or"] == s.count("Image_Reports",
                                {"$or": [{"Type": "MR"}, {"Case.Title": {"$regex": "fracture", "$options": "i"}}]})
    assert got["keyword"] == [d["image"] for _, d in s.keyword_search("ring enhancing lesion", limit=10)]
    assert got["export"] == 334 and got["cli"] == [0, 988]
    try:
        import medpix_tui.tui.app  # noqa: F401
    except ImportError:
        pass
    else:
        first, names = got["tui"]
        assert first == 2050
        assert names == [d["image"] for _, d in s.keyword_search("glioma", limit=0)] and names
    assert tree_digest(ro) == before, "reading never writes into the bundle"
    assert not [p for p in ro.rglob("*") if p.stat().st_mode & 0o222], "still read-only"
