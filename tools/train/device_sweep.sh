#!/usr/bin/env bash
# One device call: the GPU runs of tools/train/README.md side by side on one GPU.
#
#   bash tools/train/device_sweep.sh [first|second]          # on the device, OUT set by the tool
#   SMOKE=1 OUT=/tmp/out bash tools/train/device_sweep.sh     # here: 1 epoch each, CPU
#
# Each run trains with its own max_minutes, exports its best epoch (dev) and scores it on
# dev and test. Everything but the weights of the probe and the resume states comes back
# as $OUT/runs.tgz.part-* (cat them | tar xzf -).
set -u
: "${OUT:?OUT must name the folder that comes back}"
PACK=${PACK:-.pack/medpix-128}
RUNS=${RUNS:-/tmp/medpix-runs}
LIMIT=${LIMIT:-380}   # seconds per run, export included: the call's timeout_s must exceed it
SITE=${SITE:-/tmp/site}

if ! PYTHONPATH=$PWD python3 -c "from medpix_tui.model._compat import open_clip" 2>/dev/null; then  # PyPI open_clip fails beside the pinned torch: _compat is what the tools import
    python3 -m pip install -q --upgrade --no-index --no-deps --target "$SITE" .pack/whl/*.whl || exit 1
    export PYTHONPATH=$SITE
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3 HF_HUB_OFFLINE=1
nvidia-smi -L 2>/dev/null || echo "no GPU: training on CPU"
mkdir -p "$RUNS"

run() {  # run NAME ARGS...: one training run in the background, its log in RUNS/NAME.log
    local name=$1
    shift
    (timeout -k 10 "$LIMIT" python3 -m tools.train.train --pack "$PACK" --out "$RUNS/$name" \
        --export "$RUNS/$name/model" ${SMOKE:+--epochs 1} "$@" >"$RUNS/$name.log" 2>&1
     echo "$name: exit $?" >>"$RUNS/status") &
}

case ${1:-first} in
first)  # the h100 recipe, a second seed, 300 epochs, stronger augmentation, a wide-tower probe
    run h100 --config tools/train/configs/h100.json
    run h100-s2 --config tools/train/configs/h100.json --seed 2
    run h100-long --config tools/train/configs/h100-long.json
    run h100-aug --config tools/train/configs/h100-aug.json
    run probe-rn50w64 --config tools/train/configs/probe-rn50w64.json ;;
second)  # the two best of the first, combined, three seeds; and the longer one again, another seed
    run h100-long-aug --config tools/train/configs/h100-long-aug.json
    run h100-long-aug-s2 --config tools/train/configs/h100-long-aug.json --seed 2
    run h100-long-aug-s3 --config tools/train/configs/h100-long-aug.json --seed 3
    run h100-long-s2 --config tools/train/configs/h100-long.json --seed 2 ;;
determinism)  # are reruns bit-identical, with and without --deterministic? (20 epochs each)
    run det-a --config tools/train/configs/h100.json --epochs 20 --deterministic
    run det-b --config tools/train/configs/h100.json --epochs 20 --deterministic
    run free-a --config tools/train/configs/h100.json --epochs 20
    run free-b --config tools/train/configs/h100.json --epochs 20 ;;
*) echo "unknown sweep $1 (first, second, determinism)"; exit 2 ;;
esac
wait

cat "$RUNS/status"
sha256sum "$RUNS"/*/best.safetensors
for log in "$RUNS"/*.log; do
    echo "== $log"
    grep -v '^{"epoch"' "$log" | tail -n 5
    grep '^{"epoch"' "$log" | tail -n 1 | cut -c1-400
done
tar czf - -C "$RUNS" --exclude=last.pt --exclude=best.safetensors --exclude='probe-*/model/*.safetensors' . \
    | split -b 15M - "$OUT/runs.tgz.part-"
ls -l "$OUT"
