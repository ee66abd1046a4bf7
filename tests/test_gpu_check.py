"""The prepared GPU check (benchmarks/gpu/check.sh) works: its --dry-run runs every section on CPU.

On the GPU host the same script measures for real; here it proves that the script, its import
check, its sections and its JSON are sound, so device time goes to measuring, not debugging.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {"pytest_gpu", "embed", "lora", "detect", "docclass", "multimodal"}


def test_scripts_parse_and_help_needs_no_heavy_import():
    for script in ("check.sh", "prepare.sh"):
        assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu" / script)]).returncode == 0
    code = ("import runpy, sys; sys.argv = ['check.py', '--help']\n"
            "try:\n    runpy.run_path('benchmarks/gpu/check.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'kitaeru', 'ultralytics') if m in sys.modules]\n"
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert r.returncode == 0, r.stderr
    assert "--dry-run" in r.stdout


@pytest.mark.slow
def test_dry_run_writes_every_figure(tmp_path, shared_data):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "KITAERU_SHARED_DATA": str(shared_data)}
    proc = subprocess.run(["bash", "benchmarks/gpu/check.sh", "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    report_path = tmp_path / "gpu_check.json"
    assert report_path.is_file(), proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    sections = report["sections"]
    failed = {n: (s.get("error"), s.get("traceback", "")[-800:]) for n, s in sections.items() if s.get("status") != "ok"}
    assert proc.returncode == 0 and not failed, (failed, proc.stderr[-3000:])
    assert report["dry_run"] is True and report["status"] == "ok" and set(sections) == SECTIONS
    assert report["environment"]["torch"] and report["wall_seconds"] > 0
    log = (tmp_path / "gpu_check.log").read_text()
    assert "imports: all present" in log and "section multimodal" in log

    # pytest -m gpu: collected, all skipped without CUDA
    tests = sections["pytest_gpu"]
    assert tests["tests"] >= 9 and tests["skipped"] == tests["tests"]
    assert "tests/test_gpu_paths.py" in tests["files"]

    # embed: every pipeline measured, the nvJPEG one through its CPU fallback
    embed = sections["embed"]
    rates = embed["images_per_second"]
    for key in ("plain_open_clip_fp32", "model_only_ceiling_bf16", "cpu_draft_decode_workers_bf16",
                "gpu_nvjpeg_decode_bf16", "kitaeru_embed_cli"):
        assert rates[key] > 0, key
    assert embed["decode_device"].startswith("cpu") and embed["ratio_best_vs_plain"] > 0
    assert embed["kitaeru_embed_cli"]["exit_code"] == 0

    # lora: seconds per step with and without gradient checkpointing
    runs = sections["lora"]["runs"]
    assert set(runs) == {"no_checkpointing", "gradient_checkpointing"}
    assert all(r["seconds_per_step"] > 0 and r["peak_memory_gb"] is None for r in runs.values())
    assert sections["lora"]["model"]["lora_rank"] == 4 and sections["lora"]["vae_encode_seconds_per_batch"] > 0

    # detect: trained and left its evidence; the real OOM needs CUDA
    amp = sections["detect"]["amp_train"]
    assert amp["exit_code"] == 0 and amp["run_status"] == "completed" and amp["epochs_completed"] == 1
    assert sections["detect"]["real_oom"]["status"] == "skipped: no CUDA"

    # docclass: step throughput from its results.csv
    thr = sections["docclass"]["throughput"]
    assert thr["exit_code"] == 0 and thr["images_per_second"] > 0 and thr["steps_per_second"] > 0
    assert sections["docclass"]["real_oom"]["status"] == "skipped: no CUDA"

    # multimodal: the quick start's seconds per epoch and recall
    quick = sections["multimodal"]["quickstart"]
    assert quick["exit_code"] == 0 and quick["steady_epoch_s"] > 0
    assert quick["recall"] and "random init" in sections["multimodal"]["text_encoder"]
