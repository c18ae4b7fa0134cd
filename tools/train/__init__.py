"""Training of the MedPix CLIP model (run on a GPU device; a tiny config runs on CPU).

OpenMP's threads wait passively here: by default they spin between parallel regions, and
on a shared 2-core host (more runnable processes than cores) a spinning thread keeps its
core from the one the next barrier waits for. A Lite0 fine-tune step took 4.4 to 7.8 s
that way against 1.6 to 1.8 s passive (``bench/bench_train_step.py``). Set before torch is
imported (libgomp reads it when it loads); an explicit ``OMP_WAIT_POLICY`` is kept.
"""

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: The modules that run within a tool, never on their own, and where they run (``python -m
#: tools.train --help`` lists them apart from the tools; ``python -m tools.train.NAME`` says this).
PHASES = {
    "pretrain": "runs within python -m tools.train.train, first, for a config with a train.pretrain block",
    "data": "reads the pack and augments its batches for python -m tools.train.train",
    "loop": "holds what python -m tools.train.train's two phases share: schedule, epoch records, resumable state",
}


class ToolParser(argparse.ArgumentParser):
    """Every training tool's option parser: named ``python -m tools.train.TOOL`` in its usage, and its
    usage errors told in one line, ``error: MESSAGE; see '... --help'`` (status 2), as ``python -m
    tools.train`` and ``medpix-tui`` tell theirs, instead of argparse's usage block before the message."""

    def __init__(self, tool: str, doc: str | None, **kwargs: Any) -> None:
        super().__init__(prog=f"python -m tools.train.{tool}",
                         description=doc.splitlines()[0] if doc else None, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")


def output_path(value: str) -> Path:
    """An argparse ``type`` for a path a tool writes: an empty one (``Path('')`` is ``.``, which was
    "error: . already exists") and ``-`` (no tool writes to standard output) are usage errors."""
    from medpix_tui.files import output_problem

    problem = output_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem if problem.startswith("-") else f"the path {problem}")
    return Path(value)


def not_a_tool(name: str) -> NoReturn:
    """``python -m tools.train.NAME`` for a module of :data:`PHASES`: one line, status 2 (it printed
    nothing and exited 0, whatever its arguments, ``--help`` included)."""
    print(f"error: tools.train.{name} is no tool of its own: it {PHASES[name]}; "
          "see 'python -m tools.train --help'", file=sys.stderr)
    raise SystemExit(2)


def one_line_errors(interrupted: str = "interrupted") -> "Callable[[Callable[[], None]], Callable[[], None]]":
    """A tool's ``main`` with the house rules: an ``error: ...`` exit is one line on stderr and
    status 2 (``SystemExit(str)`` alone exits 1), the library's errors (a missing source folder) are
    one line with their own status, as in ``medpix-tui``, and Ctrl-C is one line and 130, not a traceback."""
    import functools
    import sys

    from medpix_tui.errors import MedpixError

    def wrap(main: "Callable[[], None]") -> "Callable[[], None]":
        @functools.wraps(main)
        def run() -> None:
            try:
                main()
            except SystemExit as exc:
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
                    raise SystemExit(2) from None
                raise
            except MedpixError as exc:
                print(f"error: {exc}", file=sys.stderr)
                raise SystemExit(exc.exit_code) from None
            except KeyboardInterrupt:
                print(interrupted, file=sys.stderr)
                raise SystemExit(130) from None
        return run
    return wrap
