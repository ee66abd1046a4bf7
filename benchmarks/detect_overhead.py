"""Wall time of ``kitaeru detect train`` vs calling Ultralytics directly with the same settings.

Both train the same model on the same data (default: ../shared/data/coco8, copied to a temporary
folder) with the same Ultralytics arguments (kitaeru's resolved ones are handed to the plain call),
in one process, after one untimed warm-up run. kitaeru's time includes everything its command does
on top: dataset and label checks, the resource plan, the resolved data.yaml, per-epoch evidence
(results.csv + TensorBoard scalars), the TensorBoard server (a second process competing for the
CPU while it starts; ``--no-tensorboard`` leaves it out), training_result.json. The last line is
the ratio.

    python benchmarks/detect_overhead.py                      # small defaults: a few minutes on CPU
    python benchmarks/detect_overhead.py --epochs 5 --imgsz 320 --repeats 3 --device cuda
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KITAERU_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coco8"


def writable_copy(data_dir: Path, target: Path) -> Path:
    dst = target / data_dir.name
    shutil.copytree(data_dir, dst)
    for path in dst.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for cache in dst.rglob("*.cache"):
        cache.unlink()
    return dst / "data.yaml"


def plain_arguments(data_yaml: Path, args: argparse.Namespace) -> dict:
    """The Ultralytics arguments kitaeru resolves for the same flags (so both sides train alike)."""
    from kitaeru.core.config import load_config
    from kitaeru.core.device import resolve_device
    from kitaeru.recipes.detect.config import RECIPE, DetectConfig
    from kitaeru.recipes.detect.plan import plan_detect
    from kitaeru.recipes.detect.train import ultralytics_arguments
    from kitaeru.recipes.detect.validate import ultralytics_device

    config = load_config(DetectConfig, RECIPE, overrides={
        "dataset": str(data_yaml), "model": args.model, "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
        "device": args.device,
    })
    device = resolve_device(config.device)
    plan = plan_detect(config, device).values
    out = ultralytics_arguments(config)
    out.update({k: plan[k] for k in ("epochs", "batch", "imgsz", "workers", "cache", "patience")})
    out.update({"data": str(data_yaml), "device": ultralytics_device(device.device), "plots": False, "seed": 0,
                "exist_ok": True})
    return out


def run_plain(data_yaml: Path, args: argparse.Namespace, save_dir: Path) -> float:
    from ultralytics import YOLO

    settings = plain_arguments(data_yaml, args)
    started = time.perf_counter()
    YOLO(args.model).train(save_dir=str(save_dir), **settings)
    return time.perf_counter() - started


def run_kitaeru(data_yaml: Path, args: argparse.Namespace, output: Path) -> float:
    from kitaeru.cli import run

    started = time.perf_counter()
    code = run(["detect", "train", "-d", str(data_yaml), "-o", str(output), "--model", args.model,
                "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
                "--device", args.device, *(["--tensorboard-port", "0"] if args.tensorboard else ["--no-tensorboard"])])
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"kitaeru detect train failed with exit code {code}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="A YOLO dataset folder with data.yaml.")
    parser.add_argument("--model", default="yolov8n.yaml", help="Model for both sides (.yaml = random init).")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs per side (the median is reported).")
    parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                        help="kitaeru with its TensorBoard server (the default command) or --no-tensorboard.")
    args = parser.parse_args()
    if not (args.data / "data.yaml").is_file():
        raise SystemExit(f"{args.data}: no data.yaml (pass --data)")

    from kitaeru.recipes.detect.ultralytics_env import guarded, prepare_ultralytics

    prepare_ultralytics(offline=True)
    with tempfile.TemporaryDirectory(prefix="kitaeru-bench-") as tmp:
        tmp = Path(tmp)
        data_yaml = writable_copy(args.data, tmp)
        with guarded(True):  # same environment for the plain side: offline, output on stderr
            run_plain(data_yaml, argparse.Namespace(**{**vars(args), "epochs": 1}), tmp / "warmup")
        plain, ours = [], []
        for i in range(args.repeats):
            with guarded(True):
                plain.append(run_plain(data_yaml, args, tmp / f"plain_{i}"))
            ours.append(run_kitaeru(data_yaml, args, tmp / f"kitaeru_{i}"))
    sys.stdout.flush()
    p, k = statistics.median(plain), statistics.median(ours)
    print(f"settings: model {args.model}, {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, "
          f"device {args.device}, {args.repeats} timed run(s) each, kitaeru TensorBoard {'on' if args.tensorboard else 'off'}")
    print(f"plain Ultralytics YOLO.train: {p:.2f} s (runs: {', '.join(f'{t:.2f}' for t in plain)})")
    print(f"kitaeru detect train:         {k:.2f} s (runs: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"ratio kitaeru/plain: {k / p:.3f}")


if __name__ == "__main__":
    main()
