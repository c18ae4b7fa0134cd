"""A hostile world for bundles and caches (issue 23, items 2, 3, 6, 7, 9, 10; issue 16, item 3).

Each attack below was tried against the code before this file: archive members outside the
bundle root, links, devices, setuid bits, duplicates and a 16 GB sparse member; a tampered or
planted cache entry; partial and foreign cache entries; one more copy per new mtime; a crafted
first page; a FIFO under a bundle file's name; ``--force`` over somebody's folder; readers of a
bundle rebuilt in place; damaged bundle folders; an unusable ``MEDPIX_CACHE`` and a full disk.
Archives are made from a tiny bundle built here (tests/support.py's made-up source).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medpix_tui import bundle as bundle_mod
from medpix_tui.bundle import (
    _TMP_PREFIX,
    DEFAULT_NAME,
    KEEP_ARCHIVES,
    MANIFEST,
    MANIFEST_SUM,
    build_bundle,
    open_bundle,
    pack_bundle,
    prune_versions,
    verify_bundle,
)
from medpix_tui.cli import main
from medpix_tui.errors import BundleError, InputError
from tests.support import tiny_case, tiny_image, write_source

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return build_bundle(write_source(root / "src"), root / "tiny", with_model=False)


@pytest.fixture(scope="module")
def archive(tiny: Path) -> Path:
    return pack_bundle(tiny, tiny.parent / "medpix.tar")


@pytest.fixture(params=["filter", "by-hand"])
def extraction(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both extraction paths: tarfile's ``data`` filter, and the member-by-member one used before 3.11.4."""
    if request.param == "by-hand":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile extraction filters")
    return request.param


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MEDPIX_CACHE", str(folder))
    return folder


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    return result.exit_code, result.output.strip().splitlines()


def with_members(archive: Path, out: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]],
                 drop: set[str] = frozenset()) -> Path:  # type: ignore[assignment]
    """A copy of ``archive`` with its members (less ``drop``) and then ``extra`` appended."""
    with tarfile.open(archive) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            if member.name not in drop:
                dst.addfile(member, src.extractfile(member))
        for info, data in extra:
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def member(name: str, data: bytes = b"x", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def sparse_member(name: str, real_size: int) -> tuple[tarfile.TarInfo, bytes]:
    """A PAX 1.0 sparse member that unpacks to ``real_size`` bytes from 1 KB in the archive (as GNU tar writes)."""
    info = tarfile.TarInfo(f"{DEFAULT_NAME}/GNUSparseFile.0/{name.rsplit('/', 1)[-1]}")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
                        "GNU.sparse.realsize": str(real_size)}
    data = b"1\n0\n512\n".ljust(512, b"\0") + b"y" * 512
    info.size = len(data)
    return info, data


ATTACKS = {
    "dotdot": lambda: [member(f"{DEFAULT_NAME}/../huge.bin", b"\0" * 4096)],
    "absolute": lambda: [member("/tmp/medpix-hbundle-absolute.bin")],
    "other-root": lambda: [member("elsewhere/x.bin")],
    "symlink": lambda: [(tarfile.TarInfo(f"{DEFAULT_NAME}/images/link.png"), None)],
    "hardlink": lambda: [(tarfile.TarInfo(f"{DEFAULT_NAME}/images/hard.png"), None)],
    "device": lambda: [(tarfile.TarInfo(f"{DEFAULT_NAME}/images/dev.png"), None)],
    "fifo": lambda: [(tarfile.TarInfo(f"{DEFAULT_NAME}/images/fifo.png"), None)],
    "setuid": lambda: None,
    "duplicate": lambda: None,
    "unlisted": lambda: [member(f"{DEFAULT_NAME}/images/extra.png")],
    "sparse-16GB": lambda: [sparse_member(f"{DEFAULT_NAME}/images/huge.bin", 16 << 30)],
    "declared-16GB": lambda: None,
}


def attack_archive(kind: str, archive: Path, out: Path) -> Path:
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        png = tar.extractfile(members[f"{DEFAULT_NAME}/images/T1_a.png"]).read()
    extra = ATTACKS[kind]()
    drop: set[str] = set()
    if kind == "symlink":
        extra[0][0].type, extra[0][0].linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        extra[0][0].type, extra[0][0].linkname = tarfile.LNKTYPE, f"{DEFAULT_NAME}/images/T1_a.png"
    elif kind == "device":
        extra[0][0].type, extra[0][0].devmajor, extra[0][0].devminor = tarfile.CHRTYPE, 1, 3
    elif kind == "fifo":
        extra[0][0].type = tarfile.FIFOTYPE
    elif kind == "setuid":  # the same bytes, marked setuid: the digests still hold
        drop = {f"{DEFAULT_NAME}/images/T1_a.png"}
        extra = [member(f"{DEFAULT_NAME}/images/T1_a.png", png, mode=0o4755)]
    elif kind == "duplicate":  # the same bytes twice: the digests still hold
        extra = [member(f"{DEFAULT_NAME}/images/T1_a.png", png)]
    elif kind == "declared-16GB":  # a header claiming 16 GB the file does not hold
        info, _ = member(f"{DEFAULT_NAME}/images/huge.bin")
        info.size = 16 << 30
        last = max(members.values(), key=lambda m: m.offset_data)
        data = bytearray(archive.read_bytes()[:last.offset_data + -(-last.size // 512) * 512])
        data += info.tobuf(tarfile.PAX_FORMAT) + b"z" * 1024
        path = out
        path.write_bytes(bytes(data))
        return path
    return with_members(archive, out, extra, drop)


@pytest.mark.parametrize("kind", sorted(ATTACKS))
def test_hostile_archive_members_are_refused_before_anything_is_written(
        kind: str, extraction: str, archive: Path, tmp_path: Path, cache: Path) -> None:
    bad = attack_archive(kind, archive, tmp_path / f"{kind}.tar")
    code, lines = run("query", "--bundle", str(bad), "--json")
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {bad} "), lines
    assert not (tmp_path / "huge.bin").exists() and not Path("/tmp/medpix-hbundle-absolute.bin").exists()
    assert not cache.exists(), "nothing written"
    with pytest.raises(BundleError):
        open_bundle(bad)


@pytest.mark.parametrize("kind,words", [("dotdot", "outside the bundle folder"), ("setuid", "setuid"),
                                        ("duplicate", "twice"), ("sparse-16GB", "sparse"), ("symlink", "a link"),
                                        ("device", "device"), ("declared-16GB", "damaged|does not hold")])
def test_each_refusal_names_its_reason(kind: str, words: str, archive: Path, tmp_path: Path, cache: Path) -> None:
    with pytest.raises(BundleError, match=words):
        open_bundle(attack_archive(kind, archive, tmp_path / f"{kind}.tar"))


def test_bundle_verify_checks_an_archive_as_it_checks_a_folder(archive: Path, tmp_path: Path, cache: Path) -> None:
    # `bundle pack` writes archives and `bundle info` reads them: `bundle verify` took folders only
    code, lines = run("bundle", "verify", str(archive))
    assert code == 0 and lines[-1].startswith("OK: ")
    png = f"{DEFAULT_NAME}/images/T1_a.png"
    with tarfile.open(archive) as tar:
        size = tar.getmember(png).size
    changed = with_members(archive, tmp_path / "changed.tar", [member(png, b"x" * size)], {png})  # same size
    code, lines = run("bundle", "verify", str(changed))
    assert code == 1 and "images/T1_a.png" in "\n".join(lines) and lines[-1].startswith("FAILED: ")
    shorter = with_members(archive, tmp_path / "shorter.tar", [member(png, b"x")], {png})  # refused from its header
    code, lines = run("bundle", "verify", str(shorter))
    assert code == 2 and lines == [f"error: {shorter} does not verify: changed: images/T1_a.png "
                                   f"(1 bytes, the manifest says {size})"]
    hostile = attack_archive("symlink", archive, tmp_path / "symlink.tar")
    code, lines = run("bundle", "verify", str(hostile))
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {hostile} ")
    assert not cache.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changed.tar", "shorter.tar", "symlink.tar"]


def test_a_good_archive_opens_by_either_extraction(extraction: str, archive: Path, tiny: Path, cache: Path) -> None:
    opened = open_bundle(archive)
    assert verify_bundle(opened.root).ok
    assert opened.manifest == open_bundle(tiny).manifest
    assert all(not (p.stat().st_mode & 0o7022) for p in opened.root.rglob("*") if p.is_file())
    opened.close()


def test_archives_open_under_debians_python(archive: Path, tmp_path: Path) -> None:
    """/usr/bin/python3 (3.11.2 on Debian: no ``filter=``) opens the archive and refuses a hostile one.

    It runs with the project's venv packages on its path, as a venv made from it with
    ``--system-site-packages`` would see them; skipped where that Python is missing or cannot import them.
    """
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no /usr/bin/python3")
    paths = [str(ROOT), *(p for p in sys.path if p.endswith("site-packages"))]  # this interpreter's packages
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "MEDPIX_CACHE": str(tmp_path / "c")}
    probe = subprocess.run([python, "-c", "import mongita, duckdb, click, PIL"], env=env, capture_output=True,
                           check=False)
    if probe.returncode:
        pytest.skip(f"{python} cannot import the project's dependencies")
    bad = attack_archive("dotdot", archive, tmp_path / "bad.tar")
    script = ("import sys, tarfile; from medpix_tui.bundle import open_bundle, verify_bundle\n"
              "print(sys.version_info[:3], hasattr(tarfile, 'data_filter'))\n"
              f"print(verify_bundle(open_bundle({str(archive)!r}).root).ok)\n")
    proc = subprocess.run([python, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "True", proc.stderr[-2000:]
    proc = subprocess.run([python, "-m", "medpix_tui", "query", "--bundle", str(bad), "--json"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {bad} is not a bundle archive"), proc.stderr


# -- caches that cannot lie ---------------------------------------------------------

def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def legacy_key(archive: Path) -> str:
    st = archive.stat()
    return f"{archive.stem}-{st.st_size}-{st.st_mtime_ns}"


def test_a_tampered_cached_copy_is_never_served(archive: Path, tiny: Path, cache: Path) -> None:
    first = open_bundle(archive)
    parquet = first.root / "parquet" / "images.parquet"
    original = parquet.read_bytes()
    first.close()
    parquet.unlink()
    forged = bytearray(original)
    forged[len(forged) // 2] ^= 0x20  # one changed byte of the captions' table, as an edited caption would be
    parquet.write_bytes(bytes(forged))
    again = open_bundle(archive)
    assert (again.root / "parquet" / "images.parquet").read_bytes() == original
    assert verify_bundle(again.root).ok


def test_a_planted_entry_named_like_the_archives_is_never_served(archive: Path, tmp_path: Path, cache: Path) -> None:
    """A bundle that verifies on its own, planted under the name the archive's copy would have (any naming)."""
    other = build_bundle(write_source(tmp_path / "src", [tiny_case("T9", ["T9_a"], [])],
                                      [tiny_image("T9", "T9_a", "CT", "EVIL INJECTED CAPTION")]), tmp_path / "other",
                         with_model=False)
    for entry in (cache / "bundles" / sha(archive), cache / legacy_key(archive)):
        shutil.copytree(other, entry / DEFAULT_NAME)
        (entry / ".verified").write_text("ok\n")
    opened = open_bundle(archive)
    assert opened.manifest["counts"]["Image_Descriptions"] == 3
    assert not (opened.root / "images" / "T9_a.png").exists() and verify_bundle(opened.root).ok


def test_a_planted_sparse_file_in_the_cache_is_removed(archive: Path, cache: Path) -> None:
    opened = open_bundle(archive)
    root = opened.root
    opened.close()
    with open(root / "images" / "huge.bin", "wb") as f:
        f.truncate(16 << 30)  # 16 GB, sparse: no disk used
    again = open_bundle(archive)
    assert not (again.root / "images" / "huge.bin").exists() and verify_bundle(again.root).ok


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_partial_and_foreign_entries_are_removed_never_served(archive: Path, tiny: Path, cache: Path) -> None:
    bundles = cache / "bundles"
    partial = bundles / sha(archive) / DEFAULT_NAME  # as a kill between mkdir and the last file would leave
    shutil.copytree(tiny, partial)
    for path in sorted((partial / "images").iterdir())[1:]:
        path.unlink()
    killed = bundles / f"{_TMP_PREFIX}{dead_pid()}-abc"  # a killed unpack's temporary folder
    shutil.copytree(tiny, killed / DEFAULT_NAME)
    (bundles / "notes").mkdir()
    (bundles / "stray.bin").write_bytes(b"x")
    opened = open_bundle(archive)
    assert verify_bundle(opened.root).ok
    assert sorted(p.name for p in bundles.iterdir()) == [sha(archive)]


STALLED_UNPACK = r"""
import sys, threading
import medpix_tui.bundle as bm

real = bm._extract
def half(tar, members, dest):
    real(tar, members[: len(members) // 2], dest)
    print(sum(1 for p in dest.rglob("*") if p.is_file()), flush=True)
    threading.Event().wait()  # stalled mid-unpack until killed
bm._extract = half
bm.open_bundle(sys.argv[1])
"""


def test_an_unpack_killed_midway_is_never_served(archive: Path, cache: Path) -> None:
    """SIGKILL a process halfway through unpacking: the next open serves a whole, verified copy."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDPIX_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", STALLED_UNPACK, str(archive)], stdout=subprocess.PIPE, text=True,
                            env=env, stdin=subprocess.DEVNULL)
    try:
        written = int(proc.stdout.readline())  # the child says when half the files are written
    finally:
        proc.kill()
        proc.wait()
    assert written > 0
    left = list((cache / "bundles").iterdir())
    assert len(left) == 1 and left[0].name.startswith(_TMP_PREFIX), "the killed unpack left its temporary folder"
    opened = open_bundle(archive)
    assert verify_bundle(opened.root).ok and opened.manifest["counts"]["Image_Descriptions"] == 3
    assert [p.name for p in (cache / "bundles").iterdir()] == [sha(archive)], "and the next open removed it"


def test_one_copy_per_archive_content(archive: Path, tmp_path: Path, cache: Path) -> None:
    open_bundle(archive).close()
    os.utime(archive, (1_700_000_000, 1_700_000_000))  # a new mtime: the same content
    open_bundle(archive).close()
    renamed = Path(shutil.copy2(archive, tmp_path / "renamed.tar"))
    open_bundle(renamed).close()
    assert [p.name for p in (cache / "bundles").iterdir()] == [sha(archive)]
    assert not [p for p in cache.iterdir() if p.name != "bundles"]


def test_only_the_copies_used_last_are_kept(tmp_path: Path, cache: Path) -> None:
    archives = []
    for i in range(KEEP_ARCHIVES + 2):
        src = write_source(tmp_path / f"src{i}", [tiny_case("T1", ["T1_a"], [])],
                           [tiny_image("T1", "T1_a", "CT", f"caption {i}")])
        archives.append(pack_bundle(build_bundle(src, tmp_path / f"b{i}", with_model=False), tmp_path / f"a{i}.tar"))
    for i, path in enumerate(archives):
        open_bundle(path).close()
        os.utime(cache / "bundles" / sha(path), (1000 + i, 1000 + i))  # used one second apart, oldest first
    open_bundle(archives[2]).close()  # the oldest kept, used again: now the newest
    open_bundle(archives[0]).close()  # unpacked again; the least recently used one goes
    kept = sorted(p.name for p in (cache / "bundles").iterdir())
    assert kept == sorted(sha(a) for a in [archives[0], archives[2], *archives[4:]])


def test_a_copy_in_use_is_not_pruned(tmp_path: Path, cache: Path) -> None:
    held = []
    for i in range(KEEP_ARCHIVES + 1):
        src = write_source(tmp_path / f"src{i}", [tiny_case("T1", ["T1_a"], [])],
                           [tiny_image("T1", "T1_a", "CT", f"c{i}")])
        path = pack_bundle(build_bundle(src, tmp_path / f"b{i}", with_model=False), tmp_path / f"a{i}.tar")
        held.append(open_bundle(path))
        os.utime(cache / "bundles" / sha(path), (1000 + i, 1000 + i))
    open_bundle(held[-1].path).close()  # prunes: the oldest is still open, so it stays
    assert held[0].root.is_dir() and verify_bundle(held[0].root).ok
    held[0].close()
    open_bundle(held[-1].path).close()
    assert not held[0].root.exists()


@pytest.mark.parametrize("case", ["file", "under-a-file", "read-only"])
def test_an_unusable_cache_folder_is_one_line(case: str, archive: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    folder = {"file": blocker, "under-a-file": blocker / "sub", "read-only": tmp_path / "ro"}[case]
    if case == "read-only":
        folder.mkdir()
        folder.chmod(0o555)
        real_mkdir = Path.mkdir

        # root ignores 0555: refuse as the kernel would
        def refused(self: Path, *args: object, **kwargs: object) -> None:
            if folder in (self, *self.parents) and self != folder:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "mkdir", refused)
    code, lines = run("query", "--bundle", str(archive), "--json", env={"MEDPIX_CACHE": str(folder)})
    assert (code == 2 and len(lines) == 1
            and lines[0].startswith(f"error: cannot use the cache folder {folder} (MEDPIX_CACHE)")), lines


# -- the kept first page -------------------------------------------------------------

def tiny_page(tiny: Path, folder: Path) -> tuple[object, Path]:
    from medpix_tui.session import SearchRequest, case_titles, run_search
    from medpix_tui.tui.first_page import write_first_page

    opened = open_bundle(tiny)
    result = run_search(opened.store, SearchRequest())
    path = write_first_page(folder, opened, result, case_titles(opened.store))
    assert path is not None
    return opened, path


def crafted(kind: str, page: dict) -> dict:
    rows = page["images"]
    if kind == "str-description":  # the crash: AttributeError: 'str' object has no attribute 'get'
        rows[0]["Description"] = "not an object"
    elif kind == "str-row":
        rows[0] = "MPX1009"
    elif kind == "fake-row":  # an injected row the bundle does not hold
        rows.insert(0, {**rows[0], "image": "FAKE_0001", "Location": "INJECTED: patient record"})
    elif kind == "injected-text":  # a real image with made-up text
        rows[0]["Location"] = "INJECTED: patient record"
    elif kind == "injected-title":
        page["titles"][rows[0]["U_id"]] = "INJECTED: patient record"
    elif kind == "wrong-total":
        page["image_count"] = 10 ** 9
    elif kind == "titles-list":
        page["titles"] = ["x"]
    elif kind == "deep":
        return json.loads("[" * 50 + "]" * 50)
    return page


@pytest.mark.parametrize("kind", ["str-description", "str-row", "fake-row", "injected-text", "injected-title",
                                  "wrong-total", "titles-list", "deep", "huge", "fifo"])
def test_a_crafted_first_page_is_ignored_with_a_reason(kind: str, tiny: Path, tmp_path: Path) -> None:
    from medpix_tui.tui.first_page import PAGE_LIMIT, load_first_page

    opened, path = tiny_page(tiny, tmp_path / "pages")
    assert load_first_page(tmp_path / "pages", opened)[0] is not None  # the page as written is read
    if kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif kind == "huge":
        path.write_bytes(b" " * (PAGE_LIMIT + 1))
    else:
        path.write_text(json.dumps(crafted(kind, json.loads(path.read_text()))))
    answer: list = []
    reader = threading.Thread(target=lambda: answer.append(load_first_page(tmp_path / "pages", opened)), daemon=True)
    reader.start()
    reader.join(30)
    assert answer, "reading the kept page blocked"
    page, problem = answer[0]
    assert page is None and problem and str(path) in problem


@pytest.mark.asyncio
async def test_the_ui_starts_past_a_crafted_page_with_a_notice(tiny: Path, tmp_path: Path) -> None:
    from medpix_tui.tui.app import MedpixApp

    opened, path = tiny_page(tiny, tmp_path / "pages")
    path.write_text(json.dumps(crafted("str-description", json.loads(path.read_text()))))
    app = MedpixApp(opened, first_page_dir=tmp_path / "pages")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.first_page is None
        assert any("Ignored the kept first page" in str(n.message) for n in app._notifications)


def test_an_edited_manifest_is_refused_on_open_not_believed(tiny: Path, tmp_path: Path) -> None:
    """A manifest whose counts were edited ("Clinical_Reports": 672) was shown by `bundle info`, and query
    answered, while `bundle verify` named it: the manifest is what every other check trusts."""
    copy = Path(shutil.copytree(tiny, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["counts"]["images_ct"] += 1
    (copy / MANIFEST).write_text(json.dumps(manifest))
    for args in (("bundle", "info", str(copy)), ("--bundle", str(copy), "query", "--limit", "1")):
        code, lines = run(*args)
        assert code == 2 and lines == [f"error: damaged bundle: {copy / MANIFEST} does not match its digest in "
                                       f"{MANIFEST_SUM}; check it with: medpix-tui bundle verify {copy}"], lines
    (copy / MANIFEST_SUM).unlink()
    code, lines = run("--bundle", str(copy), "query", "--limit", "1")
    assert code == 2 and f"{copy / MANIFEST_SUM} is missing" in lines[0], lines


def test_a_fifo_named_like_a_bundle_file_does_not_block_the_open(tiny: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny, tmp_path / "b"))
    for name in (MANIFEST_SUM, "store/medpix.Image_Descriptions/$.data"):
        (copy / name).unlink()
        os.mkfifo(copy / name)
    proc = subprocess.run([sys.executable, "-m", "medpix_tui", "query", "--bundle", str(copy), "--json"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)
    assert (proc.returncode == 2 and "is not a regular file" in proc.stderr
            and "bundle verify" in proc.stderr), proc.stderr
    with pytest.raises(BundleError, match="manifest.json.sha256 is not a regular file"):
        open_bundle(copy)  # the digest is a FIFO: refused at once, never read (a read would wait)
    report = verify_bundle(copy)
    assert "store/medpix.Image_Descriptions/$.data" in report.changed and MANIFEST in report.changed


@pytest.mark.asyncio
async def test_the_ui_names_a_damaged_store_without_blocking(tiny: Path, tmp_path: Path) -> None:
    """The terminal UI starts on a bundle whose store is garbage: drawn at once, then one line naming
    the store file in the status bar (no crash, no hang). A FIFO digest is refused at open (above)."""
    import asyncio

    from tui_support import settle

    from medpix_tui.tui.app import MedpixApp

    copy = Path(shutil.copytree(tiny, tmp_path / "b"))
    data = copy / "store" / "medpix.Image_Descriptions" / "$.data"
    data.write_bytes(os.urandom(data.stat().st_size))
    app = MedpixApp(open_bundle(copy), first_page_dir=tmp_path / "pages")
    async with app.run_test(size=(120, 40)) as pilot:
        await asyncio.wait_for(settle(pilot), 60)
        status = str(app.screen.query_one("#status").render())
        assert ("damaged bundle" in status and "medpix.Image_Descriptions" in status
                and "bundle verify" in status), status
    assert not (tmp_path / "pages").exists() or not any((tmp_path / "pages").iterdir())


# -- --force replaces only what is ours ------------------------------------------------

def test_force_refuses_a_folder_with_somebody_elses_manifest(tmp_path: Path) -> None:
    theirs = tmp_path / "extension"
    theirs.mkdir()
    (theirs / MANIFEST).write_text(json.dumps({"manifest_version": 3, "name": "my extension"}))
    (theirs / "background.js").write_text("// mine")
    code, lines = run("bundle", "build", "--source", str(write_source(tmp_path / "src")), "--out", str(theirs),
                      "--force", "--no-model")
    assert (code == 2 and len(lines) == 1 and f"refusing to replace {theirs}" in lines[0]
            and "not a medpix-tui bundle" in lines[0])
    assert (theirs / "background.js").read_text() == "// mine"


def test_force_refuses_a_bundle_holding_other_files_and_foreign_links(tiny: Path, tmp_path: Path) -> None:
    src = write_source(tmp_path / "src")
    mixed = Path(shutil.copytree(tiny, tmp_path / "mixed"))
    (mixed / "my-notes.txt").write_text("mine")
    with pytest.raises(InputError, match="does not list"):
        build_bundle(src, mixed, force=True, with_model=False)
    assert (mixed / "my-notes.txt").exists()
    shrunk = Path(shutil.copytree(tiny, tmp_path / "shrunk"))
    (shrunk / "images" / "T1_a.png").write_bytes(b"mine now")
    with pytest.raises(InputError, match="do not match"):
        build_bundle(src, shrunk, force=True, with_model=False)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "src")
    with pytest.raises(InputError, match="a symbolic link this tool did not make"):
        build_bundle(write_source(tmp_path / "src2"), link, force=True, with_model=False)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InputError, match="a file, not a bundle folder"):
        build_bundle(src, a_file, force=True, with_model=False)


def test_force_replaces_our_bundles_old_and_new(tiny: Path, tmp_path: Path) -> None:
    src = write_source(tmp_path / "src", [tiny_case("T1", ["T1_a"], [])], [tiny_image("T1", "T1_a", "CT")])
    plain = Path(shutil.copytree(tiny, tmp_path / "plain"))  # a plain folder, as builds before versioning wrote
    build_bundle(src, plain, force=True, with_model=False)
    assert plain.is_symlink() and open_bundle(plain).manifest["counts"]["Image_Descriptions"] == 1
    build_bundle(src, plain, force=True, with_model=False)
    assert verify_bundle(plain).ok
    versions = [p for p in tmp_path.iterdir() if p.name.startswith(".plain.v-")]
    assert len(versions) == 1 and os.readlink(plain) == versions[0].name, "old versions nobody holds are removed"


# -- atomic rebuilds -------------------------------------------------------------------

READER = r"""
import json, sys, time
from medpix_tui.bundle import open_bundle
from medpix_tui.sql import connect, run_sql

path, stop = sys.argv[1], sys.argv[2]
rounds = mixed = errors = 0
from pathlib import Path
while not Path(stop).exists() or not rounds:
    try:
        b = open_bundle(path)
        try:
            manifest = b.manifest["counts"]["Image_Descriptions"]
            store = b.store.count("Image_Descriptions", {})
            con = connect(b.parquet_dir)
            sql = run_sql(con, "SELECT count(*) FROM images")[1][0][0]
            con.close()
            files = len(list((b.root / "images").iterdir()))
            kw = len(b.store.keyword_search("caption", limit=100))
        finally:
            b.close()
        seen = {manifest, store, sql, files, kw}
        mixed += len(seen) != 1
    except Exception as exc:
        errors += 1
        print("ERROR", type(exc).__name__, exc, file=sys.stderr)
    rounds += 1
print(json.dumps({"rounds": rounds, "mixed": mixed, "errors": errors}))
"""


def test_readers_never_see_a_mix_while_the_bundle_is_rebuilt_in_place(tmp_path: Path) -> None:
    """8 reader processes open the same path again and again while it is rebuilt with --force
    from two sources of different sizes: every round sees one bundle whole."""
    sources = []
    for n in (2, 5):
        cases = [tiny_case(f"T{i}", [f"T{i}_a"], [f"T{i}_b"]) for i in range(n)]
        images = [tiny_image(f"T{i}", f"T{i}_{k}", m, "a caption")
                  for i in range(n) for k, m in (("a", "CT"), ("b", "MR"))]
        sources.append(write_source(tmp_path / f"src{n}", cases, images))
    (tmp_path / "shared").mkdir()
    out = build_bundle(sources[0], tmp_path / "shared" / DEFAULT_NAME, with_model=False)
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(out), str(stop)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL) for _ in range(8)]
    rebuilds = 0
    try:
        for rebuilds in range(1, 13):
            build_bundle(sources[rebuilds % 2], out, force=True, with_model=False)
        stop.touch()
        results = [r.communicate(timeout=300) for r in readers]
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
    totals = {"rounds": 0, "mixed": 0, "errors": 0}
    for r, (stdout, stderr) in zip(readers, results, strict=True):
        assert r.returncode == 0, stderr[-2000:]
        for key, value in json.loads(stdout.splitlines()[-1]).items():
            totals[key] += value
    print(f"8 readers, {rebuilds} rebuilds in place: {totals['rounds']} rounds, {totals['mixed']} mixed,"
          f" {totals['errors']} errors")
    assert totals["mixed"] == 0 and totals["errors"] == 0, totals
    assert totals["rounds"] >= 8
    assert verify_bundle(out).ok
    prune_versions(out)  # versions still held when the last build ended go once their readers have
    leftovers = [p.name for p in out.parent.iterdir() if p.name != out.name]
    assert len(leftovers) == 1 and leftovers[0] == os.readlink(out), leftovers


# -- damaged bundle folders ---------------------------------------------------------------

@pytest.fixture(scope="module")
def modelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("modelled")
    return build_bundle(write_source(root / "src"), root / "b", with_model=True)


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    (bundle / MANIFEST_SUM).write_text(f"{sha(path)}  {MANIFEST}\n")


DAMAGE = {
    "no-counts": (lambda b: edit_manifest(b, lambda m: m.pop("counts")), ["bundle", "info"], MANIFEST),
    "entry-is-a-number": (lambda b: edit_manifest(b, lambda m: m["files"].__setitem__("images/T1_a.png", 5)),
                          ["query", "--json"], MANIFEST),
    "ids-json-5": (lambda b: (b / "embeddings" / "ids.json").write_text("5"), ["similar", "T1_a"],
                   "embeddings/ids.json"),
    "garbage-store": (lambda b: (b / "store" / "medpix.Image_Descriptions" / "$.data").write_bytes(os.urandom(900)),
                      ["query", "--json"], "store/medpix.Image_Descriptions/$.data"),
    "empty-model-config": (lambda b: (b / "model" / "open_clip_config.json").write_text(""),
                           ["search-images", "ring lesion"], "model/open_clip_config.json"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_bundle_is_named_as_damaged(kind: str, modelled: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(modelled, tmp_path / "b"))
    damage, command, named = DAMAGE[kind]
    damage(copy)
    args = [*command[:1], "--bundle", str(copy), *command[1:]] if command[0] != "bundle" else [*command, str(copy)]
    code, lines = run(*args)
    assert code == 2 and len(lines) == 1, lines
    assert str(copy / named) in lines[0] and f"medpix-tui bundle verify {copy}" in lines[0], lines


def test_pack_refuses_an_output_inside_the_bundle(tiny: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny, tmp_path / "b"))
    before = {p: sha(p) for p in copy.rglob("*") if p.is_file()}
    code, lines = run("bundle", "pack", str(copy), str(copy / "images" / "x.tar"))
    assert code == 2 and "inside the bundle" in lines[-1], lines
    code, lines = run("bundle", "pack", "--force", str(copy), str(copy / MANIFEST))
    assert code == 2 and "inside the bundle" in lines[-1], lines
    assert {p: sha(p) for p in copy.rglob("*") if p.is_file()} == before and verify_bundle(copy).ok


@pytest.mark.parametrize("name", ["b.tar.gz", "b.tgz", "b.zip", "b.TAR.XZ"])
def test_pack_refuses_a_name_that_promises_compression(tiny: Path, tmp_path: Path, name: str) -> None:
    """``pack ... a.tar.gz`` wrote a plain tar under that name: ``tar xzf`` then said "not in gzip format"."""
    code, lines = run("bundle", "pack", str(tiny), str(tmp_path / name))
    assert code == 2 and len(lines) == 1 and "a bundle archive is a plain tar" in lines[0], lines
    assert lines[0].endswith(f"name it {name.split('.')[0]}.tar") and not (tmp_path / name).exists()


def test_pack_of_an_archive_says_it_is_packed_already(tiny: Path, tmp_path: Path) -> None:
    """``pack x/b1.tar out.tar`` said "bundle not found: x/b1.tar" of a file that is there."""
    archive = tmp_path / "b1.tar"
    assert run("bundle", "pack", str(tiny), str(archive))[0] == 0
    code, lines = run("bundle", "pack", str(archive), str(tmp_path / "again.tar"))
    assert code == 2 and lines == [f"error: {archive} is a file (an archive is packed already): "
                                   "name a bundle folder to pack"], lines


# -- environment: full disk, killed runs -----------------------------------------------------

def test_a_full_disk_during_build_is_one_line_and_leaves_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle_mod.shutil, "copyfile", full)
    out = tmp_path / "out" / "b"
    out.parent.mkdir()
    code, lines = run("bundle", "build", "--source", str(write_source(tmp_path / "src")), "--out", str(out),
                      "--no-model")
    assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert not any(out.parent.iterdir()), "nothing left behind"


def test_temporaries_of_killed_runs_are_removed_by_the_next(archive: Path, tiny: Path, tmp_path: Path,
                                                            cache: Path) -> None:
    pid = dead_pid()
    out = tmp_path / "packs"
    out.mkdir()
    (out / f"{_TMP_PREFIX}{pid}-pack-x.tar").write_bytes(b"half")  # a killed pack
    (cache / "bundles").mkdir(parents=True)
    (cache / "bundles" / f"{_TMP_PREFIX}{pid}-q1w2").mkdir()  # a killed unpack
    pack_bundle(tiny, out / "x.tar")
    open_bundle(out / "x.tar").close()
    assert sorted(p.name for p in out.iterdir()) == ["x.tar"]
    assert sorted(p.name for p in (cache / "bundles").iterdir()) == [sha(out / "x.tar")]


# -- fuzzing archive members -------------------------------------------------------------

NAMES = st.sampled_from([f"{DEFAULT_NAME}/images/T1_a.png", f"{DEFAULT_NAME}/images/new.png", f"{DEFAULT_NAME}/../x",
                         f"{DEFAULT_NAME}/./images/T2_a.png", f"{DEFAULT_NAME}//images/T1_b.png", "/abs", "x/y",
                         f"{DEFAULT_NAME}", f"{DEFAULT_NAME}/images", f"{DEFAULT_NAME}/{MANIFEST}", "..",
                         f"{DEFAULT_NAME}/images/T1_b.png\\..\\x", f"{DEFAULT_NAME}/store"])
TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                         tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"S"])


@settings(max_examples=int(os.environ.get("MEDPIX_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.lists(st.tuples(NAMES, TYPES, st.sampled_from([0o644, 0o755, 0o4755, 0o2644, 0o1777, 0o777]),
                                st.binary(max_size=64)), min_size=1, max_size=4),
       drop=st.booleans(), by_hand=st.booleans())
def test_random_members_are_refused_or_served_whole(extra: list, drop: bool, by_hand: bool, archive: Path,
                                                   tmp_path_factory: pytest.TempPathFactory,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path_factory.mktemp("fuzz")
    monkeypatch.setenv("MEDPIX_CACHE", str(work / "cache"))
    with monkeypatch.context() as m:
        if by_hand:
            m.delattr(tarfile, "data_filter", raising=False)
        members = []
        for name, kind, mode, data in extra:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size = (kind, mode,
                                               len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0)
            info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            members.append((info, data if info.size else None))
        bad = with_members(archive, work / "a.tar", members, {f"{DEFAULT_NAME}/images/T2_a.png"} if drop else set())
        try:
            opened = open_bundle(bad)
        except BundleError as exc:
            assert "\n" not in str(exc)
        else:
            assert verify_bundle(opened.root).ok
            opened.close()
    stray = [p for p in work.rglob("*") if not p.is_dir() and p.name != "a.tar" and DEFAULT_NAME not in p.parts]
    assert not stray, stray
    assert not Path("/abs").exists() and not (work / "x").exists()


@pytest.mark.parametrize("kind", ["fifo", "huge", "not-a-list", "long-entry", "deep"])
def test_a_crafted_sql_history_is_no_history(kind: str, tmp_path: Path) -> None:
    from medpix_tui.tui.screens.sql import HISTORY_LIMIT, MAX_HISTORY, _read_history

    path = tmp_path / "sql_history.json"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text({"huge": json.dumps(["SELECT 1"] * (HISTORY_LIMIT // 8)), "not-a-list": '{"q": "SELECT 1"}',
                         "long-entry": json.dumps(["x" * (HISTORY_LIMIT // MAX_HISTORY + 1), "SELECT 1"]),
                         "deep": "[" * 100_000 + "]" * 100_000}[kind])
    answer: list = []
    reader = threading.Thread(target=lambda: answer.append(_read_history(path)), daemon=True)
    reader.start()
    reader.join(30)
    assert answer, "reading the history blocked"
    assert answer[0][0] == (["SELECT 1"] if kind == "long-entry" else [])


def test_pack_force_replaces_an_earlier_archive_never_another_file(tiny: Path, tmp_path: Path) -> None:
    """``bundle pack B notes.txt --force`` turned a person's notes into a tar."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes")
    code, lines = run("bundle", "pack", "--force", str(tiny), str(notes))
    assert code == 2 and lines == [f"error: refusing to replace {notes}: it is no bundle archive of this tool; "
                                   "remove it yourself or choose another place"], lines
    assert notes.read_text() == "my precious notes"
    archive = tmp_path / "b.tar"
    assert run("bundle", "pack", str(tiny), str(archive))[0] == 0
    assert run("bundle", "pack", "--force", str(tiny), str(archive))[0] == 0 and verify_bundle(archive).ok
    code, lines = run("bundle", "pack", str(tiny), str(tmp_path))
    assert code == 2 and f"e.g. {tmp_path / 'results.tar'}" in lines[-1], lines
