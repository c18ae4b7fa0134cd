"""Time what the integrity checks of issue 23 add to opening a bundle (prints figures, asserts nothing).

    python bench/bench_bundle_open.py [BUNDLE]

Opens the bundle folder (manifest schema, reader lock), checks the store's files as the first
query does (sizes and digests), then packs it and opens the archive twice: once unpacking it
into an empty cache, once from the cached copy (archive sha256 + every file rechecked).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medpix_tui.bundle import STORE_DIR, default_bundle_path, open_bundle, pack_bundle


def timed(label: str, fn):
    start = time.perf_counter()
    out = fn()
    print(f"{label:<42} {time.perf_counter() - start:7.3f} s")
    return out


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else default_bundle_path()
    with tempfile.TemporaryDirectory(prefix="medpix-bench-open-") as tmp:
        os.environ["MEDPIX_CACHE"] = str(Path(tmp) / "cache")
        b = timed("open folder (manifest, lock)", lambda: open_bundle(path))
        timed("check store + index (sizes, digests)", lambda: (b.checked_dir(STORE_DIR), b.checked("search.sqlite")))
        size = sum(e["size"] for e in b.manifest["files"].values())
        b.close()
        archive = timed("pack", lambda: pack_bundle(path, Path(tmp) / "b.tar"))
        timed("open archive, empty cache (unpack+verify)", lambda: open_bundle(archive).close())
        timed("open archive, cached copy (rechecked)", lambda: open_bundle(archive).close())
        print(f"bundle: {len(b.manifest['files'])} files, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
