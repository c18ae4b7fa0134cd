"""Training of the MedPix CLIP model (run on a GPU device; a tiny config runs on CPU).

OpenMP's threads wait passively here: by default they spin between parallel regions, and
on a shared 2-core host (more runnable processes than cores) a spinning thread keeps its
core from the one the next barrier waits for. A Lite0 fine-tune step took 4.4 to 7.8 s
that way against 1.6 to 1.8 s passive (``bench/bench_train_step.py``). Set before torch is
imported (libgomp reads it when it loads); an explicit ``OMP_WAIT_POLICY`` is kept.
"""

import os
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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
