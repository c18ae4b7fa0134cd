"""Shared fixtures: the real MedPix 2.0 release and one bundle built from it per session."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from medpix_tui.bundle import Bundle, build_bundle, default_source_path, open_bundle

SOURCE = Path(os.environ.get("MEDPIX_SOURCE") or default_source_path())


@pytest.fixture(scope="session")
def source_dir() -> Path:
    """The real release beside the checkout (CI has it too)."""
    if not (SOURCE / "Case_topic.json").exists():
        pytest.fail(f"MedPix 2.0 release not found at {SOURCE} (set MEDPIX_SOURCE)")
    return SOURCE


@pytest.fixture(scope="session")
def real_bundle_path(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle built once per session from the real release."""
    out = tmp_path_factory.mktemp("bundles") / "medpix-2.0"
    build_bundle(source_dir, out)
    return out


@pytest.fixture(scope="session")
def real_bundle(real_bundle_path: Path) -> Bundle:
    """The session bundle, opened read-only."""
    return open_bundle(real_bundle_path)


@pytest.fixture(scope="session")
def server_store(source_dir: Path):
    """The release loaded into mongomock behind the server backend (a MongoDB server's stand-in)."""
    import mongomock

    from medpix_tui.source import load_source
    from medpix_tui.store import Store

    store = Store.from_client(mongomock.MongoClient())
    store.load(load_source(source_dir, check_images=False))
    return store


@pytest.fixture(autouse=True)
def _signals_restored() -> Iterator[None]:
    """add-case ignores stop signals once its case is added (its process ends right after): run
    in-process (CliRunner), that would outlive the test, and children would inherit the ignored SIGHUP."""
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {signum: signal.getsignal(signum) for signum in stops}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)
