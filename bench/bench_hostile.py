"""Peak RSS and outcome of each command on hostile input (issue 23: every command stays under 1 GB).

Each attack runs ``python -m medpix_tui ...`` in a fresh process from a scratch folder; the
peak resident memory comes from ``/usr/bin/time`` (else ``wait4``, which starts at this script's own size).
The hostile files are made up here: real deflated PNG bombs (streamed, never held in memory),
sparse 2 GB files, a 32 MB Descriptions.json of empty objects, SQL that asks for billions of
rows or gigabytes of text::

    python bench/bench_hostile.py             # every attack, about two minutes
    python bench/bench_hostile.py --only sql  # attacks whose name holds "sql"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# E402: these import only once the line above puts the checkout on the path
from tests.support import tiny_case, tiny_image, write_source  # noqa: E402

LIMIT_MB = 1024
TWO_GB = 2 * 1024 ** 3


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A real, decodable grey PNG of ``width`` x ``height`` zeros, deflated row by row (a few hundred KB)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    parts = [comp.compress(row) for _ in range(height)]
    data = b"".join(parts) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def sparse_tail(path: Path, extra: int) -> Path:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size + extra)
    return path


def run(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int, float, float, str]:
    """(exit status, peak RSS in MB, seconds, last output line) of ``medpix-tui ARGS``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDPIX_CACHE": str(cwd / "cache")}
    env.pop("MEDPIX_MONGO_URI", None)
    # /usr/bin/time is a small parent: a child forked from this (large) script would start its
    # high-water mark at this script's RSS
    timer_cmd = (["/usr/bin/time", "-q", "-f", "%M", "-o", str(cwd / "rss.txt")] if Path("/usr/bin/time").exists()
                 else [])
    started = time.monotonic()
    with open(cwd / "output.txt", "w+b") as out:
        proc = subprocess.Popen([*timer_cmd, sys.executable, "-m", "medpix_tui", *args], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(max(0, out.seek(0, 2) - 4096))
        lines = out.read().decode("utf-8", "replace").strip().splitlines() or [""]
    rss_kb = float((cwd / "rss.txt").read_text().split()[-1]) if timer_cmd else usage.ru_maxrss
    return proc.returncode, rss_kb / 1024, time.monotonic() - started, lines[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run only attacks whose name contains this")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medpix-hostile-"))
    try:
        return _bench(tmp, args.only)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bench(tmp: Path, only: str) -> int:
    from medpix_tui.bundle import build_bundle

    bundle = build_bundle(write_source(tmp / "tiny-src"), tmp / "bundle", with_model=False)
    b = str(bundle)

    def source_with_image(name: str, make: Callable[[Path], object]) -> list[str]:
        src = write_source(tmp / name, [tiny_case("T1", ["T1_a"], [])], [tiny_image("T1", "T1_a", "CT")])
        make(src / "images" / "T1_a.png")
        return ["bundle", "build", "--source", str(src), "--out", str(tmp / f"{name}-out"), "--no-model"]

    def source_with(name: str, file: str, make: Callable[[Path], object]) -> list[str]:
        src = write_source(tmp / name)
        make(src / file)
        return ["bundle", "build", "--source", str(src), "--out", str(tmp / f"{name}-out"), "--no-model"]

    def at_the_cap(name: str) -> list[str]:
        names = [f"T1_{i}" for i in range(6)]
        src = write_source(tmp / name, [tiny_case("T1", names, [])], [tiny_image("T1", n, "CT") for n in names])
        for n in names:
            bomb_png(src / "images" / f"{n}.png", 4000, 4000)
        return ["bundle", "build", "--source", str(src), "--out", str(tmp / f"{name}-out"), "--no-model"]

    def add_case_bomb(name: str) -> list[str]:
        target = write_source(tmp / f"{name}-target")
        (tmp / name).mkdir()
        bomb_png(tmp / name / "N1_a.png", 20_000, 20_000)
        (tmp / f"{name}.json").write_text(json.dumps({"case": tiny_case("N1", ["N1_a"], []),
                                                     "images": [tiny_image("N1", "N1_a", "CT")]}))
        return ["add-case", str(tmp / f"{name}.json"), "--images", str(tmp / name), "--source", str(target)]

    attacks: dict[str, Callable[[], list[str]]] = {
        "sql: SELECT * FROM range(3e9)": lambda: ["sql", "--bundle", b, "SELECT * FROM range(3000000000)"],
        "sql: count(*) FROM range(1e12), --timeout 5": lambda: ["sql", "--bundle", b, "--timeout", "5",
                                                                "SELECT count(*) FROM range(1000000000000)"],
        "sql: ORDER BY over range(3e9)": lambda: ["sql", "--bundle", b,
                                                  "SELECT * FROM range(3000000000) ORDER BY random() LIMIT 1"],
        "sql: string_agg of 3e8 rows": lambda: ["sql", "--bundle", b,
                                                "SELECT length(string_agg('xxxxxxxxxx', ',')) FROM range(300000000)"],
        "sql: repeat('x', 1e8) x 100 rows": lambda: ["sql", "--bundle", b,
                                                     "SELECT repeat('x', pow(10, 8)::INT) FROM range(100)"],
        "sql: doubling strings (recursive CTE)": lambda: ["sql", "--bundle", b, (
            "WITH RECURSIVE t(s, n) AS (SELECT 'x', 0 UNION ALL SELECT s || s, n + 1 FROM t WHERE n < 40)"
            " SELECT max(length(s)) FROM t")],
        "sql: 100000 rows of 10 kB": lambda: ["sql", "--bundle", b, "--format", "csv",
                                              "SELECT repeat('x', 10000) FROM range(100000)"],
        "build: PNG 20000x20000 (deflated)": lambda: source_with_image("bomb20k",
                                                                       lambda p: bomb_png(p, 20_000, 20_000)),
        "build: PNG 11000x11000 (deflated)": lambda: source_with_image("bomb11k",
                                                                       lambda p: bomb_png(p, 11_000, 11_000)),
        "build: PNG + 2 GB of zeros": lambda: source_with_image(
            "tail", lambda p: (bomb_png(p, 64, 64), sparse_tail(p, TWO_GB))),
        "build: Descriptions.json of 2 GB": lambda: source_with("json2g", "Descriptions.json",
                                                              lambda p: (p.write_bytes(b"["), sparse_tail(p, TWO_GB))),
        "build: Descriptions.json of 16 MB of {}": lambda: source_with(
            "json16", "Descriptions.json",
            lambda p: p.write_text("[" + ",".join(["{}"] * ((16 * 1024 * 1024 - 16) // 3)) + "]")),
        "build: 6 PNGs of 4000x4000 (the cap; accepted)": lambda: at_the_cap("cap"),
        "add-case: PNG 20000x20000": lambda: add_case_bomb("addbomb"),
        "query: filter of 117 kB": lambda: ["query", "--bundle", b, "--filter", json.dumps(
            {"$or": [{"Type": {"$regex": f"(a|b)*z{i}"}} for i in range(3200)]})],
        "query: filter nested 900 deep": lambda: ["query", "--bundle", b, "--filter",
                                                  '{"$and":[' * 900 + "{}" + "]}" * 900],
        "query: regex (?V1)glioma": lambda: ["query", "--bundle", b, "--field", "Description.Caption=(?V1)glioma"],
    }
    print(f"{'attack':<48} {'exit':>4} {'peak MB':>8} {'s':>6}  outcome")
    worst = 0.0
    for name, make in attacks.items():
        if only and only not in name:
            continue
        cmd = make()
        code, rss, seconds, last = run(cmd, tmp)
        worst = max(worst, rss)
        flag = "" if rss <= LIMIT_MB else "  OVER 1 GB"
        print(f"{name:<48} {code:>4} {rss:>8.0f} {seconds:>6.1f}  {last[:110]}{flag}", flush=True)
    print(f"\nworst peak RSS: {worst:.0f} MB (target <= {LIMIT_MB} MB)")
    return 0 if worst <= LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
