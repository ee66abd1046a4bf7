"""Embedding on more than one process: one process vs 2 torchrun ranks vs Spark local[2], same folder.

All three run ``kitaeru embed`` with the same model, batch and images (generated 1600×900 camera
frames); the sharded runs write a folder of Parquet parts, checked to hold the one-process rows.
Each command is timed end to end as a user sees it (process start, model load, Spark's JVM) and by
its own embedding time (``embed_seconds`` of the summary: the slowest writer's). The last line is
the ratio of each engine's images/s (end to end) to one process's.

One process gets as many torch threads as the ranks have together, so the comparison is of the
same CPUs used two ways.

    python benchmarks/embed_scaling.py                         # 96 images, timm ViT-Tiny, 2 CPU cores
    python benchmarks/embed_scaling.py --n 5000 --model vit_l_14 --pretrained none --device cuda --ranks 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_throughput import make_camera_frames  # noqa: E402


def run(command: list[str], env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--model", default="timm:vit_tiny_patch16_224")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()

    import numpy as np

    from kitaeru.index.embeddings_io import read_embeddings

    with tempfile.TemporaryDirectory(prefix="kitaeru-scaling-") as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        make_camera_frames(images, args.n)
        common = ["--image-dir", str(images), "--model", args.model, "--pretrained", args.pretrained,
                  "--batch-size", str(args.batch_size), "--device", args.device, "--json"]
        base_env = {**os.environ, "KITAERU_NO_PROGRESS": "1"}
        kitaeru = [sys.executable, "-m", "kitaeru", "embed"]
        ranks = args.ranks
        cases = {
            "1 process": (kitaeru + common + ["--out", str(root / "one.parquet"), "--workers", str(ranks)],
                          {**base_env, "OMP_NUM_THREADS": str(ranks)}),
            f"torchrun {ranks} ranks": ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                                         "-m", "kitaeru", "embed", *common, "--out", str(root / "ranks"), "--workers", "1"],
                                        {**base_env, "OMP_NUM_THREADS": "1"}),
            f"spark local[{ranks}]": (kitaeru + common + ["--out", str(root / "spark"), "--engine", "spark",
                                                            "--spark-master", f"local[{ranks}]"],
                                      {**base_env, "OMP_NUM_THREADS": "1"}),
        }
        results = {}
        for name, (command, env) in cases.items():
            wall, summary = run(command, env)
            results[name] = {"wall": wall, "embed": summary["embed_seconds"], "out": summary["output"]}
            print(f"{name:>22}: {args.n / wall:7.1f} images/s end to end ({wall:6.1f} s), "
                  f"{args.n / summary['embed_seconds']:7.1f} images/s embedding ({summary['embed_seconds']:.1f} s)")
        reference = read_embeddings(str(root / "one.parquet"))
        for name in list(cases)[1:]:
            got = read_embeddings(str(root / ("ranks" if "torchrun" in name else "spark")))
            same_rows = got.metadata.column("path").to_pylist() == reference.metadata.column("path").to_pylist()
            gap = float(np.abs(got.vectors - reference.vectors).max())
            print(f"{name:>22}: same rows in the same order: {same_rows}; largest vector difference {gap:.2e}")
        one = args.n / results["1 process"]["wall"]
        ratios = ", ".join(f"{name} {args.n / r['wall'] / one:.2f}x" for name, r in list(results.items())[1:])
        print(f"images/s vs one process (end to end): {ratios}")


if __name__ == "__main__":
    main()
