"""The Python API is the command line: ``kitaeru.<job>.<mode>(**fields)`` resolves, checks and runs
exactly as ``kitaeru <job> <mode>`` does and returns what ``--json`` prints; ``help()`` lists every
option; mistakes raise ``kitaeru.KitaeruError`` with the command's one-line message; importing
kitaeru loads no job and no heavy library."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import kitaeru


def test_import_is_light_and_every_job_is_there():
    code = ("import sys, kitaeru; jobs = [kitaeru.multimodal, kitaeru.detect, kitaeru.lora]; "
            "print(sorted(m for m in ('torch', 'ultralytics', 'diffusers', 'kitaeru.recipes.detect', 'pydantic') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from kitaeru.recipes.catalog import JOBS

    assert set(JOBS) <= set(dir(kitaeru))
    with pytest.raises(AttributeError):
        kitaeru.not_a_job  # noqa: B018


def test_help_lists_every_option_of_every_mode():
    import importlib

    from kitaeru.core.config import cli_meta
    from kitaeru.recipes.catalog import JOBS, job_module

    for name in JOBS:
        recipe = importlib.import_module(job_module(name)).RECIPE
        for mode in recipe.modes:
            function = getattr(getattr(kitaeru, name), mode.name.replace("-", "_"))
            doc = function.__doc__
            assert doc.startswith(mode.help.strip()), (name, mode.name)
            for field, info in mode.schema.model_fields.items():
                assert f"    {field}" in doc, (name, mode.name, field)
                for alias in cli_meta(info)["aliases"]:
                    assert alias.replace("-", "_") in doc, (name, mode.name, alias)
    import inspect

    params = inspect.signature(kitaeru.detect.train).parameters
    assert "data_dir" in params and "cfg_name" in params and params["more"].kind is inspect.Parameter.VAR_KEYWORD


def test_the_root_help_is_each_recipes_own_line(cli):
    import importlib

    from kitaeru.cli import COMMANDS
    from kitaeru.recipes.catalog import JOBS, job_module

    for name, line in JOBS.items():
        assert importlib.import_module(job_module(name)).RECIPE.help == line == COMMANDS[name][1]
    listing = " ".join(cli("--help").stdout.split())
    for name, line in JOBS.items():
        assert " ".join(line.split()[:4]) in listing, name


@pytest.fixture
def vectors(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "vectors.npy"
    x = rng.standard_normal((300, 16)).astype(np.float32)
    np.save(path, x / np.linalg.norm(x, axis=1, keepdims=True))  # unit length: inner product = cosine
    return path


def test_the_api_and_the_cli_give_the_same_result(vectors, tmp_path, cli):
    r = cli("index", "build", "--embeddings", vectors, "--output", tmp_path / "cli" / "x.faiss", "--type", "flat", "--json")
    assert r.exit_code == 0, r.stderr
    from_cli = json.loads(r.stdout)
    from_api = kitaeru.index.build(embeddings=vectors, index_out=tmp_path / "api" / "x.faiss", index_type="flat")
    assert json.loads(json.dumps(from_api)) == from_api  # plain JSON values, as --json prints
    normalise = lambda d: json.loads(json.dumps(d).replace(str(tmp_path / "cli"), "OUT").replace(str(tmp_path / "api"), "OUT"))  # noqa: E731
    drop = {"seconds", "build_seconds", "wall_seconds", "qps", "created"}
    strip = lambda d: {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k not in drop}  # noqa: E731
    assert strip(normalise(from_api)) == strip(normalise(from_cli))
    assert (tmp_path / "api" / "x.faiss").stat().st_size == (tmp_path / "cli" / "x.faiss").stat().st_size
    queries = tmp_path / "q.npy"
    np.save(queries, np.load(vectors)[:2])
    found = kitaeru.index.search(index=tmp_path / "api" / "x.faiss", queries=queries, top_k=3, out=tmp_path / "ids.npy")
    assert json.dumps(found) and np.load(tmp_path / "ids.npy")[:, 0].tolist() == [0, 1]  # each finds itself first


def test_mistakes_raise_the_commands_one_line_error(tmp_path, cli):
    missing = tmp_path / "missing.npy"
    with pytest.raises(kitaeru.DataError) as caught:
        kitaeru.index.build(embeddings=missing, index_out=tmp_path / "x.faiss")
    r = cli("index", "build", "--embeddings", missing, "--output", tmp_path / "x.faiss")
    assert r.exit_code == 2 and r.stderr.strip() == f"error: {caught.value}"
    with pytest.raises(kitaeru.ConfigError, match="did you mean"):
        kitaeru.index.build(embedings=missing)
    with pytest.raises(kitaeru.KitaeruError, match="preset"):
        kitaeru.docclass.train(cfg_name="no_such_preset")
    with pytest.raises(TypeError, match="several modes"):
        kitaeru.detect()
    assert not (tmp_path / "x.faiss").exists()
