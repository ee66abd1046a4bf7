#!/bin/bash
# Export a docclass checkpoint to ONNX in the kitaeru image (the seed's to_onnx.bash).
#
#   docker/to_onnx.sh CFG_NAME CHECKPOINT [OUT.onnx] [more 'kitaeru docclass export-onnx' options]
#   docker/to_onnx.sh lcnet050_cosface_96 runs/docclass/lcnet050_cosface_96/weights/best.ckpt model.onnx
#
# The checkpoint's folder is mounted read-only; the ONNX file and its .json sidecar are written to
# the folder of OUT (default: beside the checkpoint, named <checkpoint>.onnx).
# Settings (environment): IMAGE (default kitaeru-train:latest), IPC_MODE (default host), SHM_SIZE.
set -euo pipefail

usage="usage: docker/to_onnx.sh CFG_NAME CHECKPOINT [OUT.onnx] [extra options]"
CFG_NAME="${1:?$usage}"
CHECKPOINT="${2:?$usage}"
shift 2
[[ -f "$CHECKPOINT" ]] || { echo "to_onnx.sh: $CHECKPOINT is not a file" >&2; exit 2; }
OUT="${CHECKPOINT%.*}.onnx"
if [[ $# -gt 0 && "$1" != -* ]]; then
    OUT="$1"
    shift
fi
IMAGE="${IMAGE:-kitaeru-train:latest}"
IPC_MODE="${IPC_MODE:-host}"
ckpt_dir="$(cd "$(dirname "$CHECKPOINT")" && pwd)"
mkdir -p "$(dirname "$OUT")"
out_dir="$(cd "$(dirname "$OUT")" && pwd)"

docker_args=(
    run --rm -it
    -e USER_ID="$(id -u)" -e GROUP_ID="$(id -g)"
    --net=host --ipc="$IPC_MODE"
    -v "$ckpt_dir":/data/checkpoint:ro
    -v "$out_dir":/data/out
)
if [[ "$IPC_MODE" != "host" ]]; then
    docker_args+=(--shm-size="${SHM_SIZE:-8g}")
fi

exec docker "${docker_args[@]}" "$IMAGE" \
    kitaeru docclass export-onnx --cfg-name "$CFG_NAME" \
    --checkpoint "/data/checkpoint/$(basename "$CHECKPOINT")" --out "/data/out/$(basename "$OUT")" "$@"
