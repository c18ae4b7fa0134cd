"""Concurrency and crashes: many readers of one bundle while another builds beside it, and builds
killed at random points, which never leave a folder that opens or verifies as a complete bundle.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medpix_tui.bundle import _TMP_PREFIX, build_bundle, open_bundle, verify_bundle
from medpix_tui.errors import BundleError
from tests.support import tiny_case, tiny_image, write_source

ROOT = Path(__file__).resolve().parents[1]
READERS = 8
DURATION = float(os.environ.get("MEDPIX_CONCURRENCY_SECONDS", "12"))
SEED = 20240606

#: Each reader opens the bundle afresh, runs these, closes it, prints a digest of the answers.
QUERIES = r"""
import hashlib, json
from click.testing import CliRunner
from medpix_tui.bundle import open_bundle
from medpix_tui.cli import main
from medpix_tui.query import field_filter
from medpix_tui.sql import connect, run_sql

def answers(path):
    b = open_bundle(path)
    s = b.store
    try:
        out = [
            [d["image"] for d in s.find("Image_Descriptions",
                                        field_filter({"Description.Caption": "glioma", "Type": "MR"}))],
            s.count("Image_Descriptions", {"$or": [{"Type": "MR"}, {"Location Category": "Thorax"}]}),
            [d["U_id"] for d in s.find("Clinical_Reports", {"MRI": {"$size": 0}}, limit=20)],
            [d["image"] for d in s.find("Image_Descriptions", {"Type": "CT"},
                                        sort=[("Description.Age", -1), ("image", 1)], limit=7)],
            [d["image"] for _, d in s.keyword_search("ring enhancing lesion", limit=10)],
            s.get_case("MPX1009")["Case"]["Title"],
            s.count("Image_Descriptions", s.split_filter("test")),
            s.count("Image_Reports", {"Case.Title": {"$regex": "fracture", "$options": "i"}}),
            run_sql(connect(b.parquet_dir), "SELECT location_category, count(*) FROM images GROUP BY 1 ORDER BY 1"),
        ]
    finally:
        b.close()
    r = CliRunner().invoke(main, ["query", "--bundle", str(path), "--filter", '{"Description.Sex": "female"}',
                                  "--fields-out", "image"])
    out.append([r.exit_code, r.output])
    return hashlib.sha256(json.dumps(out, default=str).encode()).hexdigest()
"""

READER = QUERIES + r"""
import sys, time
path, deadline, rounds = sys.argv[1], float(sys.argv[2]), 0
while time.time() < deadline or not rounds:  # at least one round, however slow the start
    print(answers(path), flush=True)
    rounds += 1
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MEDPIX_MONGO_URI", None)
    return env


def test_readers_agree_while_a_bundle_builds_beside(real_bundle_path: Path, tmp_path: Path) -> None:
    from tests.test_hardening_integrity import link_copy

    shared = tmp_path / "shared"
    bundle = link_copy(real_bundle_path, shared / "medpix-2.0")
    namespace: dict = {}
    exec(compile(QUERIES, "queries", "exec"), namespace)
    expected = namespace["answers"](bundle)
    deadline = time.time() + DURATION + 3  # + time for the readers to start
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(bundle), str(deadline)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=_env(), cwd=tmp_path)
               for _ in range(READERS)]
    builds = 0
    try:
        rng = random.Random(SEED)
        while time.time() < deadline:  # rebuild a made-up bundle beside the one being read, replacing it each time
            n = rng.randrange(2, 6)
            cases = [tiny_case(f"T{i}", [f"T{i}_a"], [f"T{i}_b"]) for i in range(n)]
            images = [tiny_image(f"T{i}", f"T{i}_{k}", m) for i in range(n) for k, m in (("a", "CT"), ("b", "MR"))]
            src = write_source(tmp_path / f"src{builds}", cases, images)
            out = build_bundle(src, shared / "beside", force=True, with_model=False)
            assert verify_bundle(out).ok and open_bundle(out).manifest["counts"]["Image_Descriptions"] == 2 * n
            builds += 1
        results = [r.communicate(timeout=120) for r in readers]
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
    rounds = 0
    for r, (out, err) in zip(readers, results, strict=True):
        assert r.returncode == 0, err[-3000:]
        digests = out.split()
        assert set(digests) == {expected}, "every answer of every reader is the expected one"
        rounds += len(digests)
    assert builds >= 2
    assert not [p for p in shared.iterdir() if p.name.startswith(_TMP_PREFIX)], "no build leftovers"
    print(f"{READERS} readers, {DURATION:.0f} s, {rounds} query rounds ({rounds * 10} queries),"
          f" {builds} builds beside: all identical")


# -- builds killed at random points --------------------------------------------------

def _kill_when(proc: subprocess.Popen, out: Path, point: str, arg: int, rng: random.Random, limit: float = 300) -> str:
    """SIGKILL the build once ``point`` is reached (plus a small random delay); return what it was doing.

    The build's working folder is looked for under its temporary name and under ``out`` alike, so a
    build that put its folder in place too early is caught half-done there.
    """
    start = time.monotonic()

    def reached() -> bool:
        if point == "validating":
            return time.monotonic() - start > arg / 1000
        for folder in [*out.parent.glob(f"{_TMP_PREFIX}*"), out]:
            if not folder.is_dir():
                continue
            if point in ("store", "parquet") and (folder / point).is_dir():
                return True
            if (point == "images" and (folder / "images").is_dir()
                    and sum(1 for _ in (folder / "images").iterdir()) >= arg):
                return True
            if point == "manifest" and ((folder / ".manifest.json.tmp").exists()
                                        or (folder / "manifest.json").exists()):
                return True
        return False

    while not reached():
        if proc.poll() is not None:
            return "finished"
        assert time.monotonic() - start < limit, f"build never reached {point}"
        time.sleep(0.002)
    time.sleep(0 if point == "manifest" else rng.uniform(0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return point


def real_subset(source_dir: Path, dest: Path, images: int) -> Path:
    """The first cases of the real release holding about ``images`` images, PNGs linked, not copied (a faster build)."""
    from medpix_tui.source import load_source

    release = load_source(source_dir, check_images=False)
    cases, docs = [], []
    by_case: dict[str, list] = {}
    for doc in release.images:
        by_case.setdefault(doc["U_id"], []).append(doc)
    for case in release.cases:
        if len(docs) >= images:
            break
        cases.append(case)
        docs.extend(by_case.get(case["U_id"], []))
    (dest / "images").mkdir(parents=True)
    (dest / "Case_topic.json").write_text(json.dumps(cases))
    (dest / "Descriptions.json").write_text(json.dumps(docs))
    for doc in docs:
        (dest / "images" / f"{doc['image']}.png").symlink_to(release.image_path(doc["image"]))
    return dest


def remove_bundle(out: Path) -> None:
    """Remove a built bundle: the link at ``out`` and the version folder it names."""
    if out.is_symlink():
        target = out.parent / os.readlink(out)
        out.unlink()
        shutil.rmtree(target)
    else:
        shutil.rmtree(out)


def test_killed_builds_never_leave_a_complete_looking_bundle(source_dir: Path, tmp_path: Path) -> None:
    """SIGKILL ``bundle build`` at seeded points in every phase: the output is absent (or whole), never half."""
    rng = random.Random(SEED)
    parent = tmp_path / "bundles"
    parent.mkdir()
    out = parent / "medpix-2.0"
    subset = real_subset(source_dir, tmp_path / "subset", 300)
    n_subset = len(json.loads((subset / "Descriptions.json").read_text()))
    points = [(source_dir, "validating", rng.randrange(300, 4000)), (source_dir, "images", rng.randrange(1, 2050)),
              (subset, "store", 0), (subset, "parquet", 0), (subset, "manifest", 0), (subset, "images", n_subset),
              (subset, "images", rng.randrange(1, n_subset))]
    killed = []
    for source, point, arg in points:
        proc = subprocess.Popen([sys.executable, "-m", "medpix_tui", "bundle", "build", "--source", str(source),
                                 "--out", str(out), "--no-model"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=_env(), cwd=tmp_path, stdin=subprocess.DEVNULL)
        try:
            state = _kill_when(proc, out, point, arg, rng)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if state == "finished":  # too quick to catch: then it must be whole
            assert proc.returncode == 0 and verify_bundle(out).ok, proc.stderr.read()[-2000:]
            remove_bundle(out)
            continue
        killed.append(f"{point}:{arg}" if arg else point)
        renamed = out.exists()
        if renamed:  # only possible once the rename happened, i.e. the bundle is whole
            assert verify_bundle(out).ok
            remove_bundle(out)
        else:
            with pytest.raises(BundleError, match="bundle not found"):
                open_bundle(out)
            with pytest.raises(BundleError, match="bundle not found"):
                verify_bundle(out)
        tmps = list(parent.glob(f"{_TMP_PREFIX}*"))
        published = [v for v in parent.glob(f".{out.name}.v-*") if v.is_dir()]
        if not renamed and not tmps and point != "validating":  # killed between the folder's rename to its
            assert [verify_bundle(v).ok for v in published] == [True], published  # version and the link
            for version in published:
                shutil.rmtree(version)
            continue
        assert len(tmps) == (0 if point == "validating" or renamed else 1), tmps
        for tmp in tmps:  # nor is the half-built folder, under its temporary name
            if (tmp / "manifest.json.sha256").exists():
                continue  # killed between the last write and the rename: whole, only not yet in place
            if (tmp / "manifest.json").exists():
                assert verify_bundle(tmp).missing == ["manifest.json.sha256"]
            else:
                with pytest.raises(BundleError, match="not a complete bundle"):
                    open_bundle(tmp)
    assert len(killed) >= 6, killed  # only the last instant (writing the manifest) may be too short to catch
    assert list(parent.glob(f"{_TMP_PREFIX}*")), "the last killed build left its temporary folder"
    build_bundle(write_source(tmp_path / "src"), out, with_model=False)  # the next normal build, in the same folder
    assert verify_bundle(out).ok
    assert not list(parent.glob(f"{_TMP_PREFIX}*")), "the next build removed the stale temporary folders"
    print(f"{len(killed)} builds killed at {killed}: none left a bundle that opens or verifies")


# -- a destination another process makes while this one writes ------------------------------

def test_a_folder_made_during_an_export_is_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by running `mkdir out; echo notes > out/precious.txt` 1.8 s into an export: it was deleted."""
    import dataclasses

    from medpix_tui import export as export_module
    from medpix_tui.errors import InputError

    bundle = open_bundle(build_bundle(write_source(tmp_path / "src"), tmp_path / "b", with_model=False))
    out = tmp_path / "out"
    spec = export_module.FORMATS["csv"]
    assert spec.dataset is not None
    write = spec.dataset

    def meanwhile(job: object, folder: Path) -> list[Path]:
        out.mkdir()
        (out / "precious.txt").write_text("notes")  # a colleague's folder, named like our --out
        return write(job, folder)  # type: ignore[arg-type]

    monkeypatch.setitem(export_module.FORMATS, "csv", dataclasses.replace(spec, dataset=meanwhile))
    for force in (False, True):
        with pytest.raises(InputError, match="already exists|not a folder this tool wrote"):
            export_module.run_export(bundle.store, out, "csv", bundle=bundle, force=force)
        assert (out / "precious.txt").read_text() == "notes"
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".b.v-")) == ["b", "out", "src"]
        shutil.rmtree(out)


def test_a_bundle_made_during_a_build_is_never_replaced_unasked(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import medpix_tui.bundle as bundle_module
    from medpix_tui.errors import OutputExistsError

    source, out = write_source(tmp_path / "src"), tmp_path / "b"
    digests = bundle_module.file_digests
    other: list[bool] = []

    def meanwhile(*args: object, **kwargs: object) -> object:
        if not other:
            other.append(True)
            build_bundle(source, out, with_model=False)  # another build of the same --out finished first
        return digests(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bundle_module, "file_digests", meanwhile)
    with pytest.raises(OutputExistsError, match="appeared while this build ran"):
        build_bundle(source, out, with_model=False)
    assert verify_bundle(out).ok and not [p for p in tmp_path.iterdir() if p.name.startswith(_TMP_PREFIX)]


def test_a_rebuild_during_a_pack_leaves_the_packed_version_in_place(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen once in 7 packs beside `bundle build --force`: the version being read was pruned ("No such file")."""
    import medpix_tui.bundle as bundle_module

    source, out = write_source(tmp_path / "src"), tmp_path / "b"
    build_bundle(source, out, with_model=False)
    pack = bundle_module._pack_held

    def rebuilt_meanwhile(real_root: Path, *args: object) -> Path:
        build_bundle(source, out, force=True, with_model=False)  # publishes a new version, prunes unheld ones
        assert real_root.is_dir(), "the held version was pruned"
        return pack(real_root, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(bundle_module, "_pack_held", rebuilt_meanwhile)
    archive = bundle_module.pack_bundle(out, tmp_path / "b.tar")
    assert verify_bundle(archive).ok


#: Stands in for an export stopped mid-write: it fills its staging folder, then waits to be killed.
_STUCK_EXPORT = r"""
import sys
from pathlib import Path
from medpix_tui.atomic import atomic_dir, atomic_file
out = Path(sys.argv[1])
with atomic_dir(out) as tmp, atomic_file(out.with_name("one.csv")) as one:
    (tmp / "images.csv").write_text("half")
    one.write_text("half")
    print("writing", flush=True)
    sys.stdin.read()  # until killed: the test closes nothing, it sends SIGKILL
"""


def test_what_a_killed_export_left_goes_with_the_next_export(tmp_path: Path) -> None:
    """SIGKILL runs no clean-up: the staging folder (an export's size) stayed, hidden, for good."""
    from medpix_tui import export as export_module

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _STUCK_EXPORT, str(out)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True,
                            env=_env(), cwd=tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    finally:
        proc.kill()
        proc.wait()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(n.startswith((f".out.{proc.pid}.", f".one.csv.{proc.pid}.")) for n in left), left
    live = tmp_path / f".out.{os.getppid()}.x.tmp"  # a running process's staging folder is not touched
    live.mkdir()
    bundle = open_bundle(build_bundle(write_source(tmp_path / "src"), tmp_path / "b", with_model=False))
    export_module.run_export(bundle.store, out, "csv", bundle=bundle)
    export_module.run_export(bundle.store, tmp_path / "one.csv", "csv", bundle=bundle)
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".b.v-"))
    assert names == [live.name, "b", "one.csv", "out", "src"], names
