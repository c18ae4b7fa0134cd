"""Every path medpix-tui reads or writes by default, and the rule that chose it (one home, as Posting's locations.py).

Two situations differ, and each answer says which applies:

- **in a checkout** (this package runs from a source tree whose ``pyproject.toml`` names
  medpix-tui, as after the README's ``pip install -e .``): the default bundle is
  ``bundle/medpix-2.0`` in the checkout, the default source ``../shared/medpix-2.0`` beside it,
  and the CLIP checkpoint the checkout's ``bundle/model/``;
- **installed** (a wheel in site-packages): the default bundle lives in the user data folder,
  the source must be named (``--source`` or ``$MEDPIX_SOURCE``), and the checkpoint is the
  package data of ``medpix_tui_model`` (``bundle/model/`` mapped into the wheel), found through
  :mod:`importlib.resources`.

``$MEDPIX_BUNDLE``, ``$MEDPIX_SOURCE`` and ``$MEDPIX_CACHE`` override both. This module imports
nothing heavy at import: ``platformdirs`` only when a user folder is asked for, :mod:`importlib.resources`
only when the packaged checkpoint is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError

APP_NAME = "medpix-tui"
#: The folder name of the default bundle (and of the top folder inside a packed archive).
DEFAULT_BUNDLE_NAME = "medpix-2.0"
#: The distribution-internal package whose data is the shipped CLIP checkpoint (``bundle/model/``).
MODEL_PACKAGE = "medpix_tui_model"
BUNDLE_ENV, SOURCE_ENV, CACHE_ENV = "MEDPIX_BUNDLE", "MEDPIX_SOURCE", "MEDPIX_CACHE"
HISTORY_FILE = "sql_history.json"
FIRST_PAGE_DIR = "first-page"


@dataclass(frozen=True)
class Location:
    """A path (None: there is none) and the rule that chose it, in words a message can quote."""

    path: Path | None
    rule: str

    def require(self) -> Path:
        """The path; a :class:`~.errors.BundleError` that states the rule when there is none."""
        if self.path is None:
            raise BundleError(self.rule)
        return self.path

    def describe(self) -> str:
        """``PATH (rule)``, or the rule alone when there is no path."""
        return f"{self.path} ({self.rule})" if self.path is not None else self.rule


def checkout_root() -> Path | None:
    """The source checkout this package runs from, or None when it runs installed."""
    root = Path(__file__).resolve().parent.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return root if 'name = "medpix-tui"' in text else None


def _user_dir(kind: str) -> Path:
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")(APP_NAME))


def _named(option: Path | str | None, flag: str, env: str) -> Location | None:
    """The place the user named: ``option`` (given as ``flag``), else ``$env``; None when neither.

    A command-line option beats the environment, and an empty value counts as not given.
    """
    if option:
        return Location(Path(option), flag)
    value = os.environ.get(env)
    if value:
        return Location(Path(value), f"${env}")
    return None


def data_dir() -> Location:
    """Where an installed medpix-tui keeps its default bundle."""
    return Location(_user_dir("data"), "the user data folder")


def state_dir() -> Location:
    """Where medpix-tui keeps what it remembers between sessions (the SQL history)."""
    return Location(_user_dir("state"), "the user state folder")


def cache_dir() -> Location:
    """Where archives are unpacked and first pages kept: ``$MEDPIX_CACHE``, else the user cache folder."""
    if (named := _named(None, "", CACHE_ENV)) is not None:
        return named
    return Location(_user_dir("cache"), "the user cache folder")


def history_file() -> Location:
    """The SQL screen's past queries."""
    state = state_dir()
    return Location(state.require() / HISTORY_FILE, state.rule)


def first_page_dir() -> Location:
    """The first page of results kept per bundle, so the next start draws it at once."""
    cache = cache_dir()
    return Location(cache.require() / FIRST_PAGE_DIR, cache.rule)


def default_bundle(option: Path | str | None = None) -> Location:
    """``option`` (``--bundle``), else ``$MEDPIX_BUNDLE``, else ``bundle/medpix-2.0`` in a checkout,
    else ``medpix-2.0`` in the user data folder."""
    if (named := _named(option, "--bundle", BUNDLE_ENV)) is not None:
        return named
    root = checkout_root()
    if root is not None:
        return Location(root / "bundle" / DEFAULT_BUNDLE_NAME, "the default in a checkout: bundle/medpix-2.0")
    return Location(data_dir().require() / DEFAULT_BUNDLE_NAME,
                    "the default when installed outside a checkout: the user data folder")


def default_source(option: Path | str | None = None) -> Location:
    """``option`` (``--source``), else ``$MEDPIX_SOURCE``, else ``../shared/medpix-2.0`` beside a
    checkout; an installed medpix-tui has no default (path None)."""
    if (named := _named(option, "--source", SOURCE_ENV)) is not None:
        return named
    root = checkout_root()
    if root is not None:
        return Location(root.parent / "shared" / DEFAULT_BUNDLE_NAME, "the default in a checkout: ../shared/medpix-2.0")
    return Location(None, "installed outside a checkout, the source to build from must be named "
                          f"(--source DIR or ${SOURCE_ENV})")


def packaged_model_dir() -> Path | None:
    """The checkpoint installed with the package (``medpix_tui_model``'s data), or None.

    :mod:`importlib.resources` answers for an installed wheel. A namespace package can also
    have portions it cannot read (an editable install's placeholder beside a wheel's folder);
    then each portion the import system found is tried in turn.
    """
    import importlib.resources
    import importlib.util

    from .model.checkpoint import CONFIG_FILE, is_checkpoint

    try:
        config = importlib.resources.files(MODEL_PACKAGE).joinpath(CONFIG_FILE)
        if isinstance(config, Path) and config.is_file():
            return config.parent
    except (ImportError, OSError, TypeError, ValueError):
        pass
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    for portion in (spec.submodule_search_locations or []) if spec else []:
        if is_checkpoint(Path(portion)):
            return Path(portion)
    return None


def model_dir(option: Path | str | None = None) -> Location:
    """The CLIP checkpoint a build copies into a bundle: ``option`` (``--model``), else the
    checkout's ``bundle/model/``, else the one installed with the package; path None when none."""
    from .model.checkpoint import is_checkpoint

    if option:
        return Location(Path(option), "--model")
    root = checkout_root()
    if root is not None and is_checkpoint(root / "bundle" / "model"):
        # an editable install maps the package onto this very folder; reading it here also keeps
        # each checkout's own checkpoint when several share one environment (PYTHONPATH)
        return Location(root / "bundle" / "model", "the checkout's bundle/model")
    packaged = packaged_model_dir()
    if packaged is not None:
        return Location(packaged, f"installed with the package ({MODEL_PACKAGE})")
    return Location(None, f"no checkpoint: none in a checkout's bundle/model nor installed as {MODEL_PACKAGE}; "
                          "pass --model DIR, or --no-model")
