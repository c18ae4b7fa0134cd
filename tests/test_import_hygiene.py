"""The layering holds: the core loads neither Textual nor torch, and import-linter's contracts are kept.

As Harlequin checks it (``tests/unit_tests/test_import_hygiene.py``): a fresh interpreter imports the
library modules and reports what ``sys.modules`` holds.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: The library a script or notebook imports. The search/session logic joins this list once it lives in the library.
CORE = ["medpix_tui.store", "medpix_tui.query", "medpix_tui.bundle", "medpix_tui.export", "medpix_tui.scan",
        "medpix_tui.search", "medpix_tui.source", "medpix_tui.sql", "medpix_tui.atomic", "medpix_tui.render",
        "medpix_tui.add_case", "medpix_tui.model"]
CORE += [m for m in ("medpix_tui.session", "medpix_tui.searching", "medpix_tui.locations")
         if importlib.util.find_spec(m) is not None]


def _loaded_after_importing(modules: list[str]) -> set[str]:
    code = (f"import importlib, json, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(json.loads(out))


def test_the_core_loads_neither_textual_nor_torch() -> None:
    loaded = _loaded_after_importing(CORE)
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("textual", "torch", "tools")
                   or m.startswith(("medpix_tui.tui", "medpix_tui.cli")))
    assert heavy == [], heavy


def test_opening_and_querying_a_bundle_loads_no_interface(real_bundle_path: Path) -> None:
    code = ("import json, sys\nfrom medpix_tui.bundle import open_bundle\nfrom medpix_tui.export import FORMATS\n"
            f"b = open_bundle({str(real_bundle_path)!r})\n"
            "b.store.find('Image_Descriptions', {'Type': 'MR'}, limit=3)\n"
            "b.store.keyword_search('glioma', limit=3)\nprint(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    loaded = json.loads(out)
    assert not [m for m in loaded if m.split(".")[0] in ("textual", "torch") or m.startswith("medpix_tui.tui")]


def test_import_linter_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
