"""Signals are installed by every command itself: a training started by a parent that left SIGINT
ignored (``nohup … &``, cron, the dashboard) still stops on SIGINT, and SIGTERM stops it the same way;
both end ``interrupted`` with exit 130 and a resume command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_training_started_with_sigint_ignored_still_stops(stop_signal, cli_interrupted, tmp_path):
    runs = tmp_path / "runs"
    run = runs / "cpu_quickstart"
    args = ["docclass", "train", "--cfg-name", "cpu_quickstart", "--output-dir", runs, "--epochs", "50", "--workers", "0",
            "data.sample_templates=3", "data.train_samples_per_class=48", "data.val_samples_per_class=3"]
    r = cli_interrupted(args, ready=lambda: (run / "results.csv").exists(), parent_ignores_sigint=True,
                        stop_signal=stop_signal)
    assert r.exit_code == 130, r.stderr[-2000:]
    result = json.loads((run / "training_result.json").read_text())
    assert result["status"] == "interrupted" and result["epochs_completed"] < 50
    assert "resume with: kitaeru docclass train --resume" in r.stderr


def test_the_handlers_are_set_whatever_the_parent_left():
    code = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "from kitaeru.core.signals import install_interrupt_handlers; install_interrupt_handlers(); "
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
            "signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
