"""Figures for the terminal UI: start time, keystroke latency, memory after reading 100 cases.

Run from the checkout::

    python bench/bench_tui.py [--bundle PATH] [--runs 7]

* start: wall time from spawning ``python`` to the first screen being usable (the results
  table filled and the search box focused), headless, median of ``--runs``; printed beside
  a bare Textual app (one Label) started the same way in the same run. Twice: without a
  kept first page (the first start on a bundle), and with the one that start kept, where the
  time until the store's own answer replaces the page is printed too;
* start in a terminal: the same two starts of ``python -m medpix_tui`` in a pseudo-terminal
  (120x36) that answers device-attribute queries as a VT220 without graphics, from spawning
  to the first row's bytes reaching the terminal: this includes what headless runs skip
  (the click entry point, textual-image's terminal probe, Textual's terminal driver). In the
  same loop, started the same way (one uncounted start each first, then turn about): a bare
  Textual app (until its label is drawn) and Harlequin 2.17 on a DuckDB file of the bundle's
  three tables, as ``medpix_tui.sql`` makes them from its Parquet (until its data catalog
  shows the database). The bench installs Harlequin into a throwaway venv (``python -m venv``,
  ``pip install harlequin==2.17.0``); when that fails it prints why and goes on;
* keystroke: from a key pressed in the search box to the table showing that query's result
  on screen, keys 0.2 s apart (a 60 words-a-minute typist), median over the letters of a
  few words;
* case open: from Enter on a result to its image on screen, median over those 100 cases;
* RSS: resident memory after opening 100 different cases one after another from the
  results table (Enter, wait for the image, Escape);
* model: with the model loaded behind the first results (as the CLI runs the app), from
  ctrl+g (similar images) to the table showing the answer;
* x30: the keystroke figure again on a x30 synthetic bundle (61,500 images, about all of
  MedPix), made once in a temporary folder from ``bench_data.synthetic``'s copies of the
  source, and its start with a kept first page (headless, as the first figures).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HARLEQUIN = "harlequin==2.17.0"
#: What the bare app draws, and the name of Harlequin's database (shown in its catalog once loaded).
BARE_LABEL, DATABASE = "bare-textual-app-ready", "medpix_bench_db"
WORDS = ("glioma", "fracture", "hemorrhage", "pneumonia", "cyst")
READY = b"READY\n"
DONE = b"DONE\n"
GAP = 0.2


def _signal(line: bytes) -> None:
    os.write(1, line)  # fd 1 directly: Textual redirects sys.stdout while it runs


def child_bare(headless: bool = True) -> None:
    """A bare Textual app: headless, ready once its first screen is mounted and refreshed; in a
    terminal it runs until killed (the bench waits for its label)."""
    from textual.app import App, ComposeResult
    from textual.widgets import Label

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield Label(BARE_LABEL)

        def on_mount(self) -> None:
            if headless:
                self.call_after_refresh(self._report_ready)

        def _report_ready(self) -> None:
            _signal(READY + DONE)
            self.exit()

    if headless:
        Bare().run(headless=True, size=(100, 32))
    else:
        Bare().run()


def child_medpix(bundle: str, page_dir: str | None) -> None:
    """The app as ``medpix-tui`` starts it: READY when the table first shows rows (the kept
    first page, or the store's answer), DONE when the store's answer is on screen. Without
    ``page_dir`` no first page is read or kept."""
    from medpix_tui.cli.tui import import_app

    MedpixApp = import_app()
    from medpix_tui.tui.screens.search import SearchScreen

    class Timed(MedpixApp):  # type: ignore[valid-type,misc]
        ready = False

        def on_search_screen_first_page_shown(self, _: SearchScreen.FirstPageShown) -> None:
            self.ready = True
            _signal(READY)

        def on_search_screen_results_shown(self, _: SearchScreen.ResultsShown) -> None:
            self.call_after_refresh(self._report_done)

        def _report_done(self) -> None:
            if not self.ready:
                _signal(READY)
            _signal(DONE)
            if self.first_page_dir and self.first_page is None:  # let the worker keep the first page
                self.call_later(self._exit_after_workers)
            else:
                self.exit()

        async def _exit_after_workers(self) -> None:
            await self.workers.wait_for_complete()
            self.exit()

    # no model preload: it starts after the first results, so it is not in the start figure, only in the exit
    Timed(bundle, history_path=None, first_page_dir=Path(page_dir) if page_dir else None,
          preload_model=False).run(headless=True, size=(100, 32))


def time_start(args: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Seconds from spawn to READY and to DONE, for ``runs`` fresh processes."""
    ready, done = [], []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, cwd=ROOT)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        ready.append(time.perf_counter() - started)
        second = proc.stdout.readline()
        done.append(time.perf_counter() - started)
        proc.wait(timeout=60)
        if (first, second) != (READY, DONE):
            raise SystemExit(f"child {args} did not get ready (exit {proc.returncode})")
    return ready, done


#: A device-attributes query (DA1) and a VT220's answer without sixel graphics.
DA1, DA1_ANSWER = b"\x1b[c", b"\x1b[?62;22c"


def time_in_terminal(argv: list[str], marker: bytes, *, env: dict[str, str] | None = None, cwd: str | None = None,
                     until: Callable[[], bool] | None = None) -> float:
    """Seconds from spawning ``argv`` in a pseudo-terminal until ``marker`` is written to it.

    ``until``: run on after the marker until this holds (a first start keeping its first page).
    """
    env = {**os.environ, "TERM": "xterm-256color", **(env or {})}
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app, on a terminal of its size from the start (a resize would redo the layout)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 36, 120, 0, 0))
        if cwd:
            os.chdir(cwd)
        os.execve(argv[0], argv, env)
    tail, elapsed = b"", None
    try:
        while time.perf_counter() - started < 60:
            if select.select([fd], [], [], 0.01)[0]:
                chunk = os.read(fd, 65536)
                if DA1 in chunk:
                    os.write(fd, DA1_ANSWER)
                if elapsed is None and marker in tail + chunk:
                    elapsed = time.perf_counter() - started
                tail = (tail + chunk)[-len(marker):]
            if elapsed is not None and (until is None or until()):
                break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    if elapsed is None:
        raise SystemExit(f"{' '.join(Path(a).name for a in argv[:3])} did not show {marker!r} in the terminal in 60 s")
    return elapsed


def install_harlequin(folder: Path) -> Path | str:
    """Harlequin 2.17 in a throwaway venv under ``folder``: the venv's bin folder, or why not."""
    venv = folder / "harlequin-venv"
    try:
        for command, limit in (([sys.executable, "-m", "venv", str(venv)], 300),
                               ([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", HARLEQUIN], 1200)):
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=limit)
    except subprocess.CalledProcessError as exc:
        said = [ln for ln in (exc.stderr or exc.stdout or "").splitlines() if ln.strip() and "WARNING" not in ln]
        return f"{' '.join(map(str, exc.cmd[-3:]))} failed (exit {exc.returncode}): {said[-1] if said else 'no output'}"
    except subprocess.TimeoutExpired as exc:
        return f"{' '.join(map(str, exc.cmd[-3:]))} took over {exc.timeout:.0f} s"
    except OSError as exc:
        return f"cannot make a venv: {exc}"
    return venv / "bin"


_DUCKDB_FILE = """
import duckdb, sys
con = duckdb.connect(sys.argv[1])
for name, parquet in zip(sys.argv[2::2], sys.argv[3::2]):
    quoted = parquet.replace("'", "''")
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{quoted}')")
con.close()
"""


def duckdb_file(python: Path, parquet_dir: Path, path: Path) -> None:
    """A DuckDB file of the bundle's three tables, as ``medpix_tui.sql.connect`` loads them,
    written by Harlequin's own DuckDB (a newer one's file format might not open in it)."""
    from medpix_tui.sql import TABLES

    pairs = [item for name in TABLES for item in (name, str(parquet_dir / f"{name}.parquet"))]
    subprocess.run([str(python), "-c", _DUCKDB_FILE, str(path), *pairs], check=True, timeout=300)


def terminal_starts(bundle: str, runs: int) -> tuple[dict[str, list[float]], str | None]:
    """Starts in a pseudo-terminal, turn about: a bare Textual app, medpix-tui's first start (an
    empty cache each time) and its start with a kept first page, and Harlequin on the same three
    tables; each once uncounted first. Also why Harlequin was not measured (None: it was)."""
    marker = min(p.stem for p in (Path(bundle) / "images").glob("*.png")).encode()  # the first row's image
    times: dict[str, list[float]] = {"bare": [], "cold": [], "warm": [], "harlequin": []}
    with tempfile.TemporaryDirectory(prefix="medpix-bench-") as tmp:
        def medpix(cache: str) -> tuple[list[str], dict[str, str]]:
            """The command and environment: the cache holds the kept first page; no remembered search."""
            return [sys.executable, "-m", "medpix_tui", "--bundle", bundle], {"MEDPIX_CACHE": cache,
                                                                               "XDG_STATE_HOME": cache}

        kept = str(Path(tmp, "kept"))
        argv, env = medpix(kept)
        time_in_terminal(argv, marker, env=env, until=lambda: any(Path(kept, "first-page").glob("*.json")))
        bare = [sys.executable, __file__, "--child", "bare-tty"]
        time_in_terminal(bare, BARE_LABEL.encode())
        bin_dir = install_harlequin(Path(tmp))
        why = bin_dir if isinstance(bin_dir, str) else None
        home = Path(tmp, "harlequin-home")  # its config, cache and data stay in the throwaway folder
        hq_env = {f"XDG_{kind}_HOME": str(home / kind.lower()) for kind in ("CONFIG", "CACHE", "DATA", "STATE")}
        hq = None
        if isinstance(bin_dir, Path):
            from medpix_tui.bundle import PARQUET_DIR

            database = Path(tmp, f"{DATABASE}.duckdb")
            hq = [str(bin_dir / "harlequin"), str(database)]
            try:
                duckdb_file(bin_dir / "python", Path(bundle, PARQUET_DIR), database)
                time_in_terminal(hq, DATABASE.encode(), env=hq_env, cwd=tmp)
            except (subprocess.SubprocessError, SystemExit) as exc:
                why, hq = f"{type(exc).__name__}: {exc}", None
        for run in range(runs):
            times["bare"].append(time_in_terminal(bare, BARE_LABEL.encode()))
            argv, env = medpix(str(Path(tmp, f"cold-{run}")))
            times["cold"].append(time_in_terminal(argv, marker, env=env))
            argv, env = medpix(kept)
            times["warm"].append(time_in_terminal(argv, marker, env=env))
            if hq is not None:
                times["harlequin"].append(time_in_terminal(hq, DATABASE.encode(), env=hq_env, cwd=tmp))
    return times, why


async def interactive(bundle: str, cases: int = 100, keystrokes: bool = True,
                      ) -> tuple[list[float], float, float, int, list[float]]:
    """Keystroke latencies, then RSS (MiB) before and after opening ``cases`` cases, and each case's open time."""
    from medpix_tui.tui.app import MedpixApp
    from medpix_tui.tui.screens.case import CaseScreen
    from medpix_tui.tui.screens.search import SearchScreen
    from medpix_tui.tui.widgets.image_view import ImageView
    from medpix_tui.tui.widgets.results import ResultsTable

    shown: asyncio.Queue[Any] = asyncio.Queue()

    class Probe(MedpixApp):
        def on_search_screen_results_shown(self, message: SearchScreen.ResultsShown) -> None:
            shown.put_nowait((time.perf_counter(), message.result.request.keywords))

        def on_image_view_loaded(self, message: ImageView.Loaded) -> None:
            shown.put_nowait((time.perf_counter(), message.path))

    async def until(predicate: Any) -> float:
        """When the app reported what ``predicate`` accepts (not when this coroutine saw it)."""
        while True:
            at, item = await asyncio.wait_for(shown.get(), 30)
            if predicate(item):
                return at

    app = Probe(bundle, image_renderer="halfcell", history_path=None, preload_model=False)  # RSS without torch
    latencies: list[float] = []
    async with app.run_test(size=(100, 32)) as pilot:
        await until(lambda keywords: keywords == "")
        await app.workers.wait_for_complete()
        for word in WORDS if keystrokes else ():
            for i in range(1, len(word) + 1):
                await app.workers.wait_for_complete()
                await pilot.pause(GAP)  # a 60 words-a-minute typist: about 5 keys a second
                started = time.perf_counter()
                await pilot.press(word[i - 1])
                latencies.append(await until(lambda keywords, text=word[:i]: keywords == text) - started)
            await app.workers.wait_for_complete()
            await pilot.press(*["backspace"] * len(word))
            await until(lambda keywords: keywords == "")
        await app.workers.wait_for_complete()
        before = rss_mib()
        table = app.screen.query_one(ResultsTable)
        assert app.result is not None
        rows, seen = [], set()
        for row, doc in enumerate(app.result.images):
            if doc["U_id"] not in seen:
                seen.add(doc["U_id"])
                rows.append(row)
        opened = 0
        opens: list[float] = []
        table.focus()
        for row in rows[:cases]:
            table.move_cursor(row=row, animate=False)
            await pilot.pause()
            started = time.perf_counter()
            await pilot.press("enter")
            opens.append(await until(lambda item: isinstance(item, Path)) - started)
            assert isinstance(app.screen, CaseScreen)
            await pilot.press("escape")
            opened += 1
        await app.workers.wait_for_complete()
        after = rss_mib()
    return latencies, before, after, opened, opens


async def model_answers(bundle: str, tries: int = 5) -> tuple[float, list[float]] | None:
    """Seconds until the preloaded model is ready, then ctrl+g -> answer on screen (None: no model)."""
    from medpix_tui.tui.app import MedpixApp
    from medpix_tui.tui.screens.search import SearchScreen
    from medpix_tui.tui.widgets.results import ResultsTable

    shown: asyncio.Queue[Any] = asyncio.Queue()

    class Probe(MedpixApp):
        def on_search_screen_results_shown(self, message: SearchScreen.ResultsShown) -> None:
            shown.put_nowait((time.perf_counter(), message.result))

    app = Probe(bundle, image_renderer="halfcell", history_path=None, preload_model=True)
    if not app.has_model:
        return None
    answers: list[float] = []
    async with app.run_test(size=(100, 32)) as pilot:
        started = time.perf_counter()
        await app.workers.wait_for_complete()
        while getattr(app.screen, "_model", None) is None:  # the preload runs behind the first results
            await app.workers.wait_for_complete()
            await pilot.pause(0.05)
        loaded = time.perf_counter() - started
        table = app.screen.query_one(ResultsTable)
        for row in range(tries):
            await pilot.press("ctrl+r")
            await app.workers.wait_for_complete()
            await pilot.pause(0.2)
            table.move_cursor(row=row * 7, animate=False)
            table.focus()
            while not shown.empty():
                shown.get_nowait()
            started = time.perf_counter()
            await pilot.press("ctrl+g")
            while True:
                at, result = await asyncio.wait_for(shown.get(), 60)
                if result.request.within:
                    answers.append(at - started)
                    break
    return loaded, answers


def synthetic_bundle(source_dir: Path, release: Path, out: Path, scale: int) -> int:
    """A bundle at ``out`` of ``scale`` copies of the source (``bench_data.synthetic``): store,
    Parquet and text index as a build writes them, the manifest of the ``release`` bundle with
    the copies' counts and files; its images folder links the release's (copy 0's images open,
    the others' do not: the x30 figures are of the table). Returns the number of images."""
    from bench_data import synthetic

    from medpix_tui.bundle import (
        IMAGE_DIR,
        MANIFEST,
        MANIFEST_SUM,
        PARQUET_DIR,
        SEARCH_FILE,
        STORE_DIR,
        file_digests,
        read_manifest,
        sha256_regular,
    )
    from medpix_tui.export import write_parquet
    from medpix_tui.search import SearchIndex
    from medpix_tui.source import load_source
    from medpix_tui.store import Store

    big = synthetic(load_source(source_dir, check_images=False), scale)
    out.mkdir()
    store = Store.open_mongita(out / STORE_DIR, writable=True)
    try:
        counts = store.load(big)
        write_parquet(store, out / PARQUET_DIR)
    finally:
        store.close()
    SearchIndex.build(big.images, big.cases, out / SEARCH_FILE).close()
    (out / IMAGE_DIR).symlink_to(Path(os.path.realpath(release)) / IMAGE_DIR)
    manifest = read_manifest(release)
    manifest["counts"] = {**counts, "images_ct": sum(d["Type"] == "CT" for d in big.images),
                          "images_mr": sum(d["Type"] == "MR" for d in big.images), "splits": big.split_counts()}
    manifest["files"] = file_digests(out)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    (out / MANIFEST_SUM).write_text(f"{sha256_regular(out / MANIFEST)}  {MANIFEST}\n")
    return len(big.images)


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder (default: the default bundle, built on first use)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-model", action="store_true", help="skip the model figures")
    parser.add_argument("--source", help="source release for the synthetic bundle (default: the default source)")
    parser.add_argument("--scale", type=int, default=30, help="copies in the synthetic bundle (1: skip it)")
    parser.add_argument("--case-open-only", action="store_true",
                        help="measure only case open (Enter -> image) and the RSS after it, then stop")
    parser.add_argument("--cases", type=int, default=100, help="cases opened for the case-open figure")
    parser.add_argument("--child", choices=("bare", "bare-tty", "medpix"), help=argparse.SUPPRESS)
    parser.add_argument("--page-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child in ("bare", "bare-tty"):
        return child_bare(headless=args.child == "bare")
    if args.child == "medpix":
        return child_medpix(args.bundle, args.page_dir)

    # Resolve (and build, on first use) in a child: a build here would leave torch and the
    # decoded images resident in this process and inflate the RSS figure below.
    bundle = subprocess.run([sys.executable, "-c", "import sys; from medpix_tui.bundle import resolve_bundle; "
                             "print(resolve_bundle(sys.argv[1] or None).root)", args.bundle or ""],
                            check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout.strip().splitlines()[-1]
    print(f"bundle: {bundle}  cores: {os.cpu_count()}  load: {os.getloadavg()[0]:.1f}")
    if args.case_open_only:
        _, before, after, opened, opens = asyncio.run(interactive(bundle, cases=args.cases, keystrokes=False))
        case_open(opens, before, after, opened)
        return
    bare, _ = time_start(["--child", "bare"], args.runs)
    cold, _ = time_start(["--child", "medpix", "--bundle", bundle], args.runs)
    page_dir = tempfile.mkdtemp(prefix="medpix-bench-")
    medpix = ["--child", "medpix", "--bundle", bundle, "--page-dir", page_dir]
    time_start(medpix, 1)  # keeps the first page, as the first start on a bundle does
    warm, store = time_start(medpix, args.runs)
    shutil.rmtree(page_dir)

    def line(label: str, times: list[float], extra: str = "") -> None:
        print(f"{label:<36} median {statistics.median(times):.3f} s  (min {min(times):.3f}, {len(times)} runs){extra}")

    def keystrokes(label: str, latencies: list[float]) -> None:
        ms = [t * 1000 for t in latencies]
        print(f"{label:<36} median {statistics.median(ms):.0f} ms  (p90 {sorted(ms)[int(len(ms) * 0.9)]:.0f} ms,"
              f" {len(ms)} keys)  target <= 150 ms")

    line("start, bare Textual app", bare)
    line("start, medpix-tui, first start", cold, "  (no kept first page: the store answers first)")
    line("start, medpix-tui", warm, "  target <= 1.0 s")
    line("  ... the store's answer replaces it", store)
    starts, why = terminal_starts(bundle, args.runs)
    line("start in a terminal, bare Textual app", starts["bare"])
    line("start in a terminal, first start", starts["cold"])
    line("start in a terminal", starts["warm"], "  (with the kept first page) target <= 1.0 s")
    if starts["harlequin"]:
        line("start in a terminal, Harlequin 2.17", starts["harlequin"], "  (a DuckDB file of the three tables)")
    else:
        print(f"{'start in a terminal, Harlequin 2.17':<36} not measured: {why}")
    latencies, before, after, opened, opens = asyncio.run(interactive(bundle, cases=args.cases))
    keystrokes("keystroke -> table", latencies)
    case_open(opens, before, after, opened)
    model = None if args.no_model else asyncio.run(model_answers(bundle))
    if model is None:
        why = "--no-model" if args.no_model else "no model in the bundle"
        print(f"{'model (similar images)':<36} not measured ({why})")
    else:
        loaded, answers = model
        print(f"{'model loaded behind the first screen':<36} {loaded:.1f} s after the first results")
        print(f"{'model: ctrl+g -> answer shown':<36} median {statistics.median(answers) * 1000:.0f} ms "
              f"(max {max(answers) * 1000:.0f} ms, {len(answers)} tries)  target <= 1 s once loaded")
    if args.scale > 1:
        x30(args, bundle, line, keystrokes)


def case_open(opens: list[float], before: float, after: float, opened: int) -> None:
    """Print the case-open figure (median, p90, max) and the RSS after opening the cases."""
    case_ms = [t * 1000 for t in opens]
    print(f"{'case open (Enter -> image)':<36} median {statistics.median(case_ms):.0f} ms  (p90 "
          f"{sorted(case_ms)[int(len(case_ms) * 0.9)]:.0f} ms, max {max(case_ms):.0f} ms, {len(case_ms)} cases)"
          "  target <= 300 ms")
    print(f"{f'RSS after {opened} cases':<36} {after:.0f} MiB  (before {before:.0f} MiB)  target <= 400 MB")


def x30(args: argparse.Namespace, release: str, line: Callable[..., None], keystrokes: Callable[..., None]) -> None:
    """The keystroke figure and the kept-page start on a synthetic bundle of ``--scale`` copies."""
    from medpix_tui.bundle import default_source_path

    source = Path(args.source) if args.source else default_source_path()
    if source is None or not source.is_dir():
        print(f"x{args.scale} synthetic bundle: not measured (no source release; give --source)")
        return
    with tempfile.TemporaryDirectory(prefix="medpix-bench-x30-") as tmp:
        started = time.perf_counter()
        big = str(Path(tmp, f"x{args.scale}"))
        count = synthetic_bundle(source, Path(release), Path(big), args.scale)
        print(f"x{args.scale} synthetic bundle: {count} images (made in {time.perf_counter() - started:.0f} s)")
        latencies, *_ = asyncio.run(interactive(big, cases=0))
        keystrokes(f"keystroke -> table, x{args.scale}", latencies)
        page_dir = str(Path(tmp, "first-page"))
        medpix = ["--child", "medpix", "--bundle", big, "--page-dir", page_dir]
        time_start(medpix, 1)
        runs = max(1, min(3, args.runs))  # a few: each start opens the big store
        warm, store = time_start(medpix, runs)
        line(f"start, medpix-tui, x{args.scale}", warm, "  (with the kept first page)")
        line("  ... the store's answer replaces it", store)


if __name__ == "__main__":
    main()
