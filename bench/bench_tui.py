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
  (the click entry point, textual-image's terminal probe, Textual's terminal driver);
* keystroke: from a key pressed in the search box to the table showing that query's result
  on screen, keys 0.2 s apart (a 60 words-a-minute typist), median over the letters of a
  few words;
* case open: from Enter on a result to its image on screen, median over those 100 cases;
* RSS: resident memory after opening 100 different cases one after another from the
  results table (Enter, wait for the image, Escape);
* model: with the model loaded behind the first results (as the CLI runs the app), from
  ctrl+g (similar images) to the table showing the answer;
* Harlequin: only when ``harlequin`` is installed (the bench installs nothing: this host may
  be offline); otherwise the reason is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("glioma", "fracture", "hemorrhage", "pneumonia", "cyst")
READY = b"READY\n"
DONE = b"DONE\n"
GAP = 0.2


def _signal(line: bytes) -> None:
    os.write(1, line)  # fd 1 directly: Textual redirects sys.stdout while it runs


def child_bare() -> None:
    """A bare Textual app: ready once its first screen is mounted and refreshed."""
    from textual.app import App, ComposeResult
    from textual.widgets import Label

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield Label("hello")

        def on_mount(self) -> None:
            self.call_after_refresh(self._report_ready)

        def _report_ready(self) -> None:
            _signal(READY + DONE)
            self.exit()

    Bare().run(headless=True, size=(100, 32))


def child_medpix(bundle: str, page_dir: str | None) -> None:
    """The app as ``medpix-tui`` starts it: READY when the table first shows rows (the kept
    first page, or the store's answer), DONE when the store's answer is on screen. Without
    ``page_dir`` no first page is read or kept."""
    from medpix_tui.cli.tui import import_app

    MedpixApp = import_app()  # noqa: N806 - as run_tui imports it
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


def time_in_terminal(bundle: str, cache: str, marker: bytes, keep: bool = False) -> float:
    """Seconds from spawning ``medpix-tui`` in a pseudo-terminal until ``marker`` is written to it.

    ``keep``: run on until the app has kept its first page in ``cache`` (a first start).
    """
    env = {**os.environ, "MEDPIX_CACHE": cache, "TERM": "xterm-256color", "XDG_STATE_HOME": cache}  # no remembered search
    pages = Path(cache) / "first-page"
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app, on a terminal of its size from the start (a resize would redo the layout)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 36, 120, 0, 0))
        os.execve(sys.executable, [sys.executable, "-m", "medpix_tui", "--bundle", bundle], env)
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
            if elapsed is not None and not (keep and not any(pages.glob("*.json"))):
                break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    if elapsed is None:
        raise SystemExit(f"medpix-tui did not show {marker!r} in the terminal within 60 s")
    return elapsed


def terminal_starts(bundle: str, runs: int) -> tuple[list[float], list[float]]:
    """First starts (each with an empty cache) and starts with a kept first page, interleaved."""
    marker = min(p.stem for p in (Path(bundle) / "images").glob("*.png")).encode()  # the first row's image
    cold, warm = [], []
    with tempfile.TemporaryDirectory(prefix="medpix-bench-") as tmp:
        kept = str(Path(tmp, "kept"))
        time_in_terminal(bundle, kept, marker, keep=True)
        for run in range(runs):
            cold.append(time_in_terminal(bundle, str(Path(tmp, f"cold-{run}")), marker))
            warm.append(time_in_terminal(bundle, kept, marker))
    return cold, warm


async def interactive(bundle: str) -> tuple[list[float], float, float, int, list[float]]:
    """Keystroke latencies, then RSS (MiB) before and after opening 100 cases, and each case's open time."""
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
        for word in WORDS:
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
        for row in rows[:100]:
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
        while app.screen._model is None:  # the preload runs behind the first results
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


def harlequin_line() -> str:
    """Harlequin's start, or why it is not measured."""
    if shutil.which("harlequin") is None:
        return "not measured: harlequin is not installed here (the bench installs nothing; this host may be offline)"
    return "installed, but not measured by this bench yet (start it in a pseudo-terminal as above to compare)"


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
    parser.add_argument("--child", choices=("bare", "medpix"), help=argparse.SUPPRESS)
    parser.add_argument("--page-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "bare":
        return child_bare()
    if args.child == "medpix":
        return child_medpix(args.bundle, args.page_dir)

    # Resolve (and build, on first use) in a child: a build here would leave torch and the
    # decoded images resident in this process and inflate the RSS figure below.
    bundle = subprocess.run([sys.executable, "-c", "import sys; from medpix_tui.bundle import resolve_bundle; "
                             "print(resolve_bundle(sys.argv[1] or None).root)", args.bundle or ""],
                            check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout.strip().splitlines()[-1]
    print(f"bundle: {bundle}  cores: {os.cpu_count()}  load: {os.getloadavg()[0]:.1f}")
    bare, _ = time_start(["--child", "bare"], args.runs)
    cold, _ = time_start(["--child", "medpix", "--bundle", bundle], args.runs)
    page_dir = tempfile.mkdtemp(prefix="medpix-bench-")
    medpix = ["--child", "medpix", "--bundle", bundle, "--page-dir", page_dir]
    time_start(medpix, 1)  # keeps the first page, as the first start on a bundle does
    warm, store = time_start(medpix, args.runs)
    shutil.rmtree(page_dir)

    def line(label: str, times: list[float], extra: str = "") -> None:
        print(f"{label:<36} median {statistics.median(times):.3f} s  (min {min(times):.3f}, {args.runs} runs){extra}")

    line("start, bare Textual app", bare)
    line("start, medpix-tui, first start", cold, "  (no kept first page: the store answers first)")
    line("start, medpix-tui", warm, "  target <= 1.0 s")
    line("  ... the store's answer replaces it", store)
    in_terminal_cold, in_terminal = terminal_starts(bundle, args.runs)
    line("start in a terminal, first start", in_terminal_cold)
    line("start in a terminal", in_terminal, "  (with the kept first page)")
    print(f"{'Harlequin':<36} {harlequin_line()}")
    latencies, before, after, opened, opens = asyncio.run(interactive(bundle))
    ms = [t * 1000 for t in latencies]
    print(f"{'keystroke -> table':<36} median {statistics.median(ms):.0f} ms  (p90 {sorted(ms)[int(len(ms) * 0.9)]:.0f} ms,"
          f" {len(ms)} keys)  target <= 150 ms")
    case_ms = [t * 1000 for t in opens]
    print(f"{'case open (Enter -> image)':<36} median {statistics.median(case_ms):.0f} ms  (p90 "
          f"{sorted(case_ms)[int(len(case_ms) * 0.9)]:.0f} ms, {len(case_ms)} cases)  target <= 300 ms")
    print(f"{f'RSS after {opened} cases':<36} {after:.0f} MiB  (before {before:.0f} MiB)  target <= 400 MB")
    model = None if args.no_model else asyncio.run(model_answers(bundle))
    if model is None:
        print(f"{'model (similar images)':<36} not measured ({'--no-model' if args.no_model else 'no model in the bundle'})")
    else:
        loaded, answers = model
        print(f"{'model loaded behind the first screen':<36} {loaded:.1f} s after the first results")
        print(f"{'model: ctrl+g -> answer shown':<36} median {statistics.median(answers) * 1000:.0f} ms "
              f"(max {max(answers) * 1000:.0f} ms, {len(answers)} tries)  target <= 1 s once loaded")


if __name__ == "__main__":
    main()
