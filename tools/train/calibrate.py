"""Fit a checkpoint's calibration (temperature per task, OOD threshold) and store it beside it.

    python -m tools.train.calibrate [--model bundle/model] [--source ../shared/medpix-2.0]

Writes ``calibration.json``, ``ood_reference.npy`` and ``ood_release.json`` (the release
images' OOD scores ``bundle build`` reuses) into the checkpoint folder (see
:mod:`medpix_tui.model.calibration`); rerun it whenever the weights change. Prints the
figures: ECE per task before and after on dev and test, and the OOD acceptance.
``--scores-only`` writes only ``ood_release.json`` for the current calibration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medpix_tui.model.calibration import calibrate_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "bundle" / "model")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "medpix-2.0")
    parser.add_argument("--scores-only", action="store_true",
                        help="only score the release images against the current calibration")
    args = parser.parse_args()
    from medpix_tui.progress import rich_progress

    if args.scores_only:
        from medpix_tui.model.calibration import score_release

        print(f"scored {score_release(args.model, args.source, rich_progress())} release images")
        return

    content = calibrate_checkpoint(args.model, args.source, rich_progress())
    print(json.dumps({"temperature": content["temperature"], "ood": content["ood"], "figures": content["figures"]},
                     indent=2))


if __name__ == "__main__":
    main()
