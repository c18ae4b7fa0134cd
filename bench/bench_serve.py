"""Figures of `medpix-tui serve` (issue 24): first screen in headless Chromium, memory per
session, and eight sessions side by side each answering a keyword search; first, the memory
an "all images" save costs the app while it renders the browser download.

    python bench/bench_serve.py [--bundle B] [--runs 3]

Each session is its own app process; its memory is the resident set of that process (and its
children) read from /proc once its first screen has arrived. Keyword latency is from the
keystrokes leaving the client to the status line of the new result arriving over the websocket.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpix_tui.bundle import resolve_bundle
from tests.serve_support import browser, screen_text, served, wait_for

ANSI = re.compile(rb"\x1b\[[0-9;?<>=$]*[A-Za-z~]")
STATUS = re.compile(rb"(\d+) images \xc2\xb7 (\d+) cases")


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return total / 1024


def app_pids(server_pid: int) -> list[int]:
    """The app processes (children of the shells textual-serve starts, or the apps themselves)."""
    try:
        return [int(c) for c in Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()]
    except OSError:
        return []


async def one_session(base: str, query: str) -> tuple[float, float]:
    """Seconds to the first screen, and from typing ``query`` to its result's status line."""
    import aiohttp

    async with aiohttp.ClientSession() as client:
        start = time.perf_counter()
        ws = await client.ws_connect(f"{base}/ws?width=120&height=40")
        seen = b""
        async for message in ws:
            seen += message.data if isinstance(message.data, bytes) else b""
            if b"2050 images" in ANSI.sub(b"", seen):
                break
        first = time.perf_counter() - start
        seen = b""
        typed = time.perf_counter()
        await ws.send_json(["stdin", query])
        async for message in ws:
            seen += message.data if isinstance(message.data, bytes) else b""
            if any(m[0] != b"2050" for m in STATUS.findall(ANSI.sub(b"", seen))):
                break
        answer = time.perf_counter() - typed
        await ws.close()
        return first, answer


async def side_by_side(base: str, sessions: int) -> list[tuple[float, float]]:
    return list(await asyncio.gather(*(one_session(base, "glioma") for _ in range(sessions))))


DOWNLOAD = """
import resource, sys, threading
from pathlib import Path
from types import SimpleNamespace
from medpix_tui.bundle import open_bundle
from medpix_tui.export import Selection, export
from medpix_tui.store import IMAGES
from medpix_tui.tui.saving import _render_download
bundle = open_bundle(Path(sys.argv[1]))
store = bundle.store
def write(path, force):
    return export(store, path, "imagefolder", selection=Selection.from_query(store, IMAGES, {}), label="modality",
                  bundle=bundle, force=force)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
payload, name = _render_download(SimpleNamespace(store_lock=threading.Lock()), write, "medpix-images")
size = payload.seek(0, 2)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(name, size, before, after)
"""


def download_memory(bundle: Path) -> tuple[str, float, float]:
    """The served "all images" save, rendered in a fresh process: its name, size and peak memory growth (MiB)."""
    out = subprocess.run([sys.executable, "-c", DOWNLOAD, str(bundle)], capture_output=True, text=True, check=True)
    name, size, before, after = out.stdout.split()
    return name, int(size) / 2**20, (int(after) - int(before)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bundle = resolve_bundle(args.bundle).root
    name, size, growth = download_memory(bundle)
    print(f"a served 'all images' save ({name}, {size:.0f} MiB): the app's peak memory grows {growth:.0f} MiB "
          "while it renders the download (a temporary file the web driver streams)")
    with served(bundle, "--max-sessions", "8") as server:
        base = f"http://127.0.0.1:{server.port}"
        firsts = []
        with tempfile.TemporaryDirectory() as downloads:
            for _ in range(args.runs):
                with browser(Path(downloads)) as page:
                    start = time.perf_counter()
                    page.get(server.url)
                    wait_for(lambda: "2050 images" in screen_text(page), 120, "the first screen")
                    firsts.append(time.perf_counter() - start)
                    memory = [rss_mib(pid) for pid in app_pids(server.process.pid)]
                    server_alone = rss_mib(server.process.pid) - sum(memory)
        print(f"opening the URL to the first screen in headless Chromium: median {statistics.median(firsts):.2f} s "
              f"over {len(firsts)} runs ({', '.join(f'{t:.2f}' for t in firsts)})")
        print(f"memory of one session (its app process): {statistics.median(memory):.0f} MiB; "
              f"server process alone {server_alone:.0f} MiB")
        wait_for(lambda: not app_pids(server.process.pid), 120, "the browser's sessions to end")
        results = asyncio.run(side_by_side(base, 8))
        answers = sorted(a for _, a in results)
        print(f"8 sessions side by side: first screens {min(f for f, _ in results):.2f} to "
              f"{max(f for f, _ in results):.2f} s; keyword search 'glioma' answered in median "
              f"{statistics.median(answers) * 1000:.0f} ms, max {answers[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
