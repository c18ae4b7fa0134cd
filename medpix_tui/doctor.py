"""What this installation uses and why: the paths of :mod:`.locations` with their rules, the
versions of what it runs on, and the graphics the terminal offers (``medpix-tui doctor``).

Everything here is cheap: versions come from package metadata (torch is not imported), a
bundle's manifest is read but not verified, and the terminal is asked only when stdout is one.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from . import locations
from .errors import MedpixError

#: Distributions whose versions a report names (torch's from its metadata: importing it takes seconds).
DISTRIBUTIONS = ("medpix-tui", "textual", "textual-image", "duckdb", "pyarrow", "mongita", "torch", "open_clip_torch",
                 "click", "platformdirs")
#: The module of the renderable textual-image chose -> what the terminal UI draws images with.
GRAPHICS = {"tgp": "kitty", "sixel": "sixel", "halfcell": "half-blocks", "unicode": "unicode blocks"}
#: Environment variables the terminal guess reads.
TERMINAL_ENV = ("TERM", "TERM_PROGRAM", "TMUX", "KITTY_WINDOW_ID", "WEZTERM_PANE", "COLORTERM")


def _location(loc: locations.Location, **extra: Any) -> dict[str, Any]:
    return {"path": str(loc.path) if loc.path is not None else None, "rule": loc.rule, **extra}


def versions() -> dict[str, str | None]:
    """Python and each of :data:`DISTRIBUTIONS` (None: not installed)."""
    out: dict[str, str | None] = {"python": f"{platform.python_version()} ({sys.executable})"}
    for name in DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def bundle_state(path: Path | None, *, builds: bool = True) -> dict[str, Any]:
    """Whether a bundle is there, and its counts and model from the manifest.

    ``builds``: whether a missing bundle there is built on first use (the default bundle, which
    ``$MEDPIX_BUNDLE`` may name); one named by ``--bundle`` is not. Not verified: that is ``bundle verify``.
    """
    from .bundle import MANIFEST, read_manifest

    if path is None:
        return {"state": "none"}
    if path.is_file():
        import tarfile

        try:
            packed = tarfile.is_tarfile(path)
        except OSError as exc:
            return {"state": f"unreadable: {exc.strerror or exc}"}
        if not packed:
            return {"state": "not a bundle: a file that is no archive ('medpix-tui bundle pack' writes those)"}
        return {"state": "archive (unpacked into the cache and verified on first use)"}
    if not (path / MANIFEST).exists():
        try:
            holds = path.is_dir() and any(path.iterdir())
        except OSError:
            holds = True
        if holds:
            return {"state": f"not a bundle: a folder without {MANIFEST}"}
        if not builds:
            return {"state": "not found: --bundle names no bundle there (build one with 'medpix-tui bundle build')"}
        return {"state": "not built yet (built from the source on first use)"}
    try:
        manifest = read_manifest(path)
    except MedpixError as exc:
        return {"state": f"unreadable: {exc}"}
    counts, model = manifest.get("counts") or {}, manifest.get("model") or {}
    return {"state": "built", "created": manifest.get("created"), "cases": counts.get("Clinical_Reports"),
            "images": counts.get("Image_Descriptions"), "model": model.get("name")}


def model_name(path: Path | None) -> str | None:
    """The checkpoint's name from its ``medpix_model.json``, None when unreadable."""
    from .model.checkpoint import METADATA_FILE

    if path is None:
        return None
    try:
        name = json.loads((path / METADATA_FILE).read_text(encoding="utf-8")).get("name")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def terminal() -> dict[str, Any]:
    """What the terminal UI would draw images with, and how that was found out.

    In a terminal, textual-image's own detection answers (it asks the terminal for Sixel and the
    Kitty graphics protocol, as the app does at start). Otherwise (a pipe, ``--json | jq``) the
    environment is read: a guess, said to be one.
    """
    env = {k: os.environ[k] for k in TERMINAL_ENV if k in os.environ}
    stdout = sys.__stdout__
    if stdout is not None and stdout.isatty():
        try:
            from textual_image.renderable import Image
        except Exception as exc:  # noqa: BLE001  (textual-image missing, or its query failed: guess below)
            how = f"textual-image's detection failed ({type(exc).__name__}); guessed from the environment"
        else:
            kind = Image.__module__.rsplit(".", 1)[-1]  # every renderable class is named Image
            return {"graphics": GRAPHICS.get(kind, kind), "how": "textual-image asked the terminal", "env": env}
    else:
        how = "stdout is not a terminal, so it was not asked; guessed from the environment"
    term, program = env.get("TERM", ""), env.get("TERM_PROGRAM", "")
    if "TMUX" in env or term.startswith(("screen", "tmux")):
        guess = "half-blocks"  # tmux passes neither protocol through by default
    elif "KITTY_WINDOW_ID" in env or term == "xterm-kitty":
        guess = "kitty"
    elif "WEZTERM_PANE" in env or program in ("WezTerm", "iTerm.app") or "sixel" in term:
        guess = "sixel"
    else:
        guess = "half-blocks"
    return {"graphics": guess, "how": how, "env": env}


def diagnose(bundle: str | Path | None = None, source: str | Path | None = None) -> dict[str, Any]:
    """Everything ``medpix-tui doctor`` prints, as one JSON-ready dict."""
    root = locations.checkout_root()
    target = locations.default_bundle(bundle)
    model = locations.model_dir()
    src = locations.default_source(source)
    return {
        "checkout": str(root) if root is not None else None,
        "bundle": _location(target, **bundle_state(target.path, builds=not bundle)),
        "source": _location(src, present=bool(src.path and (src.path / "Case_topic.json").is_file())),
        "model": _location(model, name=model_name(model.path)),
        "cache": _location(locations.cache_dir()),
        "state": _location(locations.state_dir()),
        "history": _location(locations.history_file()),
        "first_pages": _location(locations.first_page_dir()),
        "versions": versions(),
        "terminal": terminal(),
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    """The text form of :func:`diagnose`: one line per item, each path with its rule in brackets."""
    installed = "none: installed (defaults: user folders; the source must be named)"
    lines = [f"{'checkout':>11}: {report['checkout'] or installed}"]
    for key, label in (("bundle", "bundle"), ("source", "source"), ("model", "model"), ("cache", "cache"),
                       ("state", "state dir"), ("history", "SQL history"), ("first_pages", "first pages")):
        item = report[key]
        lines.append(f"{label:>11}: {item['path'] or '-'}  [{item['rule']}]")
        if key == "bundle":
            detail = item["state"]
            if item["state"] == "built":
                detail = (f"built {item['created']}: {item['cases']} cases, {item['images']} images, "
                          f"model: {item['model'] or 'none (the model commands refuse this bundle)'}")
            lines.append(f"{'':>11}  {detail}")
        elif key == "source" and item["path"]:
            lines.append(f"{'':>11}  {'a release (Case_topic.json found)' if item['present'] else 'not there'}")
        elif key == "model" and item["path"]:
            lines.append(f"{'':>11}  {item['name'] or 'no medpix_model.json'} (what a build ships)")
    vers = report["versions"]
    lines.append(f"{'python':>11}: {vers['python']}")
    lines.append(f"{'versions':>11}: "
                 + ", ".join(f"{k} {v or 'not installed'}" for k, v in vers.items() if k != "python"))
    term = report["terminal"]
    env = " ".join(f"{k}={v}" for k, v in term["env"].items()) or "no terminal variables set"
    lines.append(f"{'terminal':>11}: images as {term['graphics']} ({term['how']}; {env})")
    return lines
