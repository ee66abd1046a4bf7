"""Wall time of ``kitaeru detect train`` vs calling Ultralytics directly with the same settings.

Both train the same model on the same data (default: ../shared/data/coco8, copied to a temporary
folder) with the same Ultralytics arguments (kitaeru's resolved ones are handed to the plain call),
in one process, after one untimed warm-up run of each. kitaeru's time includes everything its
command does on top: dataset and label checks, the resource plan, the resolved data.yaml,
per-epoch evidence (results.csv, TensorBoard scalars, the training_result.json heartbeat), the
TensorBoard URL, training_result.json. ``--tensorboard`` picks how kitaeru's runs get their
TensorBoard: ``new`` (default: each run binds its own port; TensorBoard itself starts only when
someone opens the URL, so here it never does), ``reuse`` (a TensorBoard is already running on the
port, as in the guide's workflow of one ``tensorboard --logdir runs`` beside training) or ``off``
(``--no-tensorboard``).

Each run is timed in wall seconds and in CPU seconds (this process and its finished child
processes), the two sides alternate, and the medians are compared; the fastest runs are compared
too (the least disturbed by other load, as ``timeit`` advises). The last line is the median
wall-time ratio.

    python benchmarks/detect_overhead.py                      # small defaults: a few minutes on CPU
    python benchmarks/detect_overhead.py --epochs 5 --imgsz 320 --repeats 3 --device cuda
"""

from __future__ import annotations

import argparse
import os
import resource
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
    from kitaeru.recipes.detect.config import RECIPE, TrainConfig
    from kitaeru.recipes.detect.plan import plan_detect
    from kitaeru.recipes.detect.training import ultralytics_arguments
    from kitaeru.recipes.detect.evaluation import ultralytics_device

    config = load_config(TrainConfig, RECIPE, overrides={
        "data_dir": str(data_yaml), "model": args.model, "epochs": args.epochs, "image_size": args.imgsz,
        "batch_size": args.batch, "device": args.device,
    })
    device = resolve_device(config.device)
    plan = plan_detect(config, device).values
    out = ultralytics_arguments(config)
    out.update({k: plan[k] for k in ("epochs", "batch", "imgsz", "workers", "cache", "patience")})
    out.update({"data": str(data_yaml), "device": ultralytics_device(device.device), "plots": False, "seed": 0,
                "exist_ok": True})
    return out


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (a TensorBoard server, say)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def run_plain(data_yaml: Path, args: argparse.Namespace, save_dir: Path) -> tuple[float, float]:
    from ultralytics import YOLO

    settings = plain_arguments(data_yaml, args)
    return timed(lambda: YOLO(args.model).train(save_dir=str(save_dir), **settings))


def run_kitaeru(data_yaml: Path, args: argparse.Namespace, output: Path) -> tuple[float, float]:
    import threading

    wall, cpu = time.perf_counter(), cpu_seconds()
    _kitaeru(data_yaml, args, output)
    wall = time.perf_counter() - wall
    # The command returns while its TensorBoard server is still being reaped in the background;
    # its CPU time is kitaeru's, so it is waited for (outside the wall time) before reading the clock.
    for thread in threading.enumerate():
        if thread.name == "tensorboard-stop":
            thread.join()
    return wall, cpu_seconds() - cpu


def _kitaeru(data_yaml: Path, args: argparse.Namespace, output: Path) -> None:
    from kitaeru.cli import run

    code = run(["detect", "train", "--data-dir", str(data_yaml), "--output-dir", str(output), "--model", args.model,
                "--epochs", str(args.epochs), "--image-size", str(args.imgsz), "--batch-size", str(args.batch),
                "--device", args.device, *args.tensorboard_flags])
    if code != 0:
        raise SystemExit(f"kitaeru detect train failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="A YOLO dataset folder with data.yaml.")
    parser.add_argument("--model", default="yolov8n.yaml", help="Model for both sides (.yaml = random init).")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs per side (the median is reported).")
    parser.add_argument("--tensorboard", choices=("new", "reuse", "off"), default="new",
                        help="kitaeru's TensorBoard server: started per run, reused from one already running, or off.")
    args = parser.parse_args()
    if not (args.data / "data.yaml").is_file():
        raise SystemExit(f"{args.data}: no data.yaml (pass --data)")

    from kitaeru.recipes.detect.ultralytics_env import guarded, prepare_ultralytics

    prepare_ultralytics(offline=True)
    load_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="kitaeru-bench-") as tmp:
        tmp = Path(tmp)
        data_yaml = writable_copy(args.data, tmp)
        server = None
        if args.tensorboard == "reuse":  # one server before any timed run, as a user would have it
            from kitaeru.recipes.detect.tensorboard_server import start_tensorboard

            from kitaeru.recipes.detect.tensorboard_server import running_tensorboard

            server = start_tensorboard(tmp / "tensorboard", 0)
            if running_tensorboard(server.port) is None:  # the first request starts TensorBoard itself
                raise SystemExit("the TensorBoard server for --tensorboard reuse never answered")
            args.tensorboard_flags = ["--tensorboard-port", str(server.port)]
        else:
            args.tensorboard_flags = ["--tensorboard-port", "0"] if args.tensorboard == "new" else ["--no-tensorboard"]
        warm_up = argparse.Namespace(**{**vars(args), "epochs": 1})
        with guarded(True):  # same environment for the plain side: offline, output on stderr
            run_plain(data_yaml, warm_up, tmp / "warmup")
        run_kitaeru(data_yaml, warm_up, tmp / "warmup_kitaeru")  # both sides warm (imports, caches)
        plain, ours = [], []
        for i in range(args.repeats):
            sides = [("plain", plain), ("kitaeru", ours)]
            for name, times in sides if i % 2 == 0 else sides[::-1]:  # alternate who goes first
                if name == "plain":
                    with guarded(True):
                        times.append(run_plain(data_yaml, args, tmp / f"plain_{i}"))
                else:
                    times.append(run_kitaeru(data_yaml, args, tmp / f"kitaeru_{i}"))
        if server is not None:
            server.stop()
    sys.stdout.flush()
    p, k = statistics.median(t for t, _ in plain), statistics.median(t for t, _ in ours)
    pc, kc = statistics.median(c for _, c in plain), statistics.median(c for _, c in ours)
    print(f"settings: model {args.model}, {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, "
          f"device {args.device}, {args.repeats} timed run(s) each, kitaeru TensorBoard server: {args.tensorboard}")
    print(f"load average before: {load_before}; after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"plain Ultralytics YOLO.train: {p:.2f} s wall, {pc:.2f} s CPU (runs: {', '.join(f'{t:.2f}' for t, _ in plain)})")
    print(f"kitaeru detect train:         {k:.2f} s wall, {kc:.2f} s CPU (runs: {', '.join(f'{t:.2f}' for t, _ in ours)})")
    print(f"CPU-time ratio kitaeru/plain: {kc / pc:.3f}")
    best = min(t for t, _ in ours) / min(t for t, _ in plain)
    print(f"best-of-{args.repeats} wall ratio kitaeru/plain (least disturbed by other load): {best:.3f}")
    print(f"ratio kitaeru/plain: {k / p:.3f}")


if __name__ == "__main__":
    main()
