"""The CLI root: instant help, version, error style and --debug."""

from __future__ import annotations

from guards import run_python

from kitaeru import __version__


def test_version(cli):
    r = cli("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"kitaeru {__version__}"


def test_help_lists_recipes_without_importing_them():
    # A fresh interpreter: --help must not import torch or any recipe implementation.
    code = (
        "import sys; from kitaeru.cli import run; rc = run(['--help']); "
        "heavy = [m for m in ('torch', 'ultralytics', 'faiss', 'umap', 'open_clip', 'timm') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout  # what makes --help instant, checked by imports rather than seconds
    assert "multimodal" in proc.stdout and "sample" in proc.stdout


def test_unknown_command_is_usage_error(cli):
    r = cli("no-such-command")
    assert r.exit_code == 2


def test_user_error_is_one_line_without_traceback(cli, tmp_path):
    r = cli("multimodal", "train", "--data-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "out"))
    assert r.exit_code == 2
    assert "error:" in r.stderr
    assert "Traceback" not in r.stderr
    assert "missing" in r.stderr


def test_debug_shows_the_exception(tmp_path):
    import pytest

    from kitaeru.cli import run
    from kitaeru.core.errors import KitaeruError

    with pytest.raises(KitaeruError):
        run(["--debug", "multimodal", "train", "--data-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o")])
