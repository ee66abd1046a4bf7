#!/bin/bash
# Train docclass in the kitaeru image on all GPUs (the seed's train.bash, with kitaeru's CLI).
#
#   docker/train.sh CFG_NAME [DATA_DIR] [more 'kitaeru docclass train' options]
#   DATA_DIR=/data/templates docker/train.sh lcnet050_cosface_96 --epochs 30
#
# Settings (environment): DATA_DIR (template pool on the host, if not given as argument),
# OUTPUT_DIR (runs folder on the host, default ./runs), IMAGE (default kitaeru-train:latest),
# IPC_MODE (default host; anything else uses SHM_SIZE, default 64g, for /dev/shm), CPUSET
# (e.g. 0-31, optional).
set -euo pipefail

usage="usage: docker/train.sh CFG_NAME [DATA_DIR] [extra options]"
CFG_NAME="${1:?$usage}"
shift
if [[ $# -gt 0 && "$1" != -* ]]; then
    DATA_DIR="$1"
    shift
fi
DATA_DIR="${DATA_DIR:?give the template folder as the second argument or in DATA_DIR ($usage)}"
[[ -d "$DATA_DIR" ]] || { echo "train.sh: $DATA_DIR is not a folder" >&2; exit 2; }
OUTPUT_DIR="${OUTPUT_DIR:-$PWD/runs}"
IMAGE="${IMAGE:-kitaeru-train:latest}"
IPC_MODE="${IPC_MODE:-host}"
mkdir -p "$OUTPUT_DIR"

docker_args=(
    run --rm -it
    -e USER_ID="$(id -u)" -e GROUP_ID="$(id -g)"
    --gpus all --net=host --ipc="$IPC_MODE"
    -v "$(cd "$DATA_DIR" && pwd)":/data/templates:ro
    -v "$(cd "$OUTPUT_DIR" && pwd)":/data/runs
)
# A private IPC namespace needs a large /dev/shm for the data-loader workers; host IPC has the host's.
if [[ "$IPC_MODE" != "host" ]]; then
    docker_args+=(--shm-size="${SHM_SIZE:-64g}")
fi
if [[ -n "${CPUSET:-}" ]]; then
    docker_args+=(--cpuset-cpus="$CPUSET")
fi

exec docker "${docker_args[@]}" "$IMAGE" \
    kitaeru docclass train --cfg-name "$CFG_NAME" --data-dir /data/templates --output-dir /data/runs "$@"
