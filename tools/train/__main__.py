"""``python -m tools.train [--help]``: what each training tool does, with its examples.

Read from each tool's own docstring (its first line and its ``python -m tools.train...`` lines),
without importing it (most load torch), so the list and the examples cannot drift from the tools.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from . import PHASES

#: The tools, in the order a run uses them (each runs as ``python -m tools.train.TOOL``).
TOOLS = ("pack", "train", "export", "calibrate", "ensemble", "regions", "case_texts")


def overview() -> str:
    """The help text: one line per tool, then the examples its docstring gives."""
    lines = ["usage: python -m tools.train.TOOL [options]   (python -m tools.train.TOOL --help: its options)",
             "", "Train, export and score the MedPix CLIP model (tools/train/README.md).", "", "tools:"]
    examples: list[str] = []
    for name in TOOLS:
        doc = _docstring(name)
        lines.append(f"  {name:<11} {doc.splitlines()[0] if doc else ''}")
        examples += [" ".join(line.split()) for line in doc.splitlines()
                     if line.strip().startswith("python -m tools.train")]
    lines += ["", "modules within the tools (no tool of their own):"]
    for name, where in PHASES.items():
        doc = _docstring(name)
        lines += [f"  {name:<11} {doc.splitlines()[0] if doc else ''}", f"{'':<14}It {where}."]
    return "\n".join([*lines, "", "examples:", *(f"  {e}" for e in examples)]) + "\n"


def _docstring(name: str) -> str:
    """The docstring of ``tools/train/NAME.py``, read without importing it."""
    path = Path(__file__).parent / f"{name}.py"
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def main() -> None:
    """Print the overview; anything but ``--help``/``-h`` (or nothing) is one error line, status 2."""
    args = sys.argv[1:]
    if args and args[0] not in ("-h", "--help"):
        print(f"error: python -m tools.train takes no {args[0]!r}: run a tool, python -m tools.train.TOOL "
              f"({', '.join(TOOLS)})", file=sys.stderr)
        raise SystemExit(2)
    sys.stdout.write(overview())


if __name__ == "__main__":
    main()
