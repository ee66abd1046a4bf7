"""A table of bad inputs across every command: each is exit 2 with one line naming the file or
setting, no traceback, nothing written, and no run folder for a run that never started."""

from __future__ import annotations

import os

import numpy as np
import pytest

# (args, text the one line must contain); {t} is the test's folder with the fixtures below.
CASES = [
    # -- missing inputs
    (["embed", "--image-dir", "{t}/missing", "--out", "{t}/out/e.parquet"], "--image-dir"),
    (["embed", "--texts", "{t}/missing.txt", "--out", "{t}/out/e.parquet"], "--texts"),
    (["index", "build", "--embeddings", "{t}/missing.parquet", "--index-out", "{t}/out/x.faiss"], "missing.parquet"),
    (["index", "search", "--index", "{t}/missing.faiss", "--text", "a"], "missing.faiss"),
    (["map", "--embeddings", "{t}/missing.parquet", "--out", "{t}/out/m.png"], "missing.parquet"),
    (["docclass", "export", "--checkpoint", "{t}/missing.ckpt", "--out", "{t}/out/m.onnx"], "missing.ckpt"),
    (["docclass", "evaluate", "--model", "{t}/missing.ckpt", "--templates", "{t}/empty"], "missing.ckpt"),
    (["docclass", "register", "--model", "{t}/missing.onnx", "--templates", "{t}/empty", "--out", "{t}/out/b.npz"], "missing.onnx"),
    (["docclass", "classify", "--model", "{t}/missing.onnx", "--bank", "{t}/notes.txt", "--image", "{t}/notes.txt"], "missing.onnx"),
    (["docclass", "train", "--data-dir", "{t}/missing", "--output-dir", "{t}/runs"], "missing"),
    (["docclass", "train", "--resume", "{t}/empty", "--output-dir", "{t}/runs"], "--resume"),
    (["lora", "prepare", "--images", "{t}/missing", "--output-dir", "{t}/out/d"], "--images"),
    (["lora", "train", "--data-dir", "{t}/missing", "--output-dir", "{t}/runs"], "missing"),
    (["multimodal", "train", "--data-dir", "{t}/missing", "--output-dir", "{t}/runs/mm"], "missing"),
    (["multimodal", "search", "--output-dir", "{t}/missing", "--text", "a"], "missing"),
    (["serve", "--output-dir", "{t}/missing"], "missing"),
    (["runs", "--runs", "{t}/missing"], "--runs"),
    # -- output paths that cannot be written (parent is a file)
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/afile/e.parquet"], "is a file"),
    (["index", "build", "--embeddings", "{t}/afile", "--index-out", "{t}/afile/x.faiss"], "is a file"),
    (["index", "add", "--index", "{t}/afile", "--embeddings", "{t}/afile", "--out", "{t}/afile/x2.faiss"], "is a file"),
    (["map", "--embeddings", "{t}/afile", "--out", "{t}/afile/m.png"], "is a file"),
    (["map", "--embeddings", "{t}/afile", "--out", "{t}/out/m.png", "--html", "{t}/afile/m.html"], "is a file"),
    (["docclass", "export", "--checkpoint", "{t}/afile", "--out", "{t}/afile/m.onnx"], "is a file"),
    (["docclass", "register", "--model", "{t}/afile", "--templates", "{t}/empty", "--out", "{t}/afile/b.npz"], "is a file"),
    (["lora", "prepare", "--images", "{t}/empty", "--output-dir", "{t}/afile/d"], "is a file"),
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet"], "no images found"),
    # -- numbers
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/afile", "--image", "{t}/afile", "--threshold", "nan"], "threshold"),
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/afile", "--image", "{t}/afile", "--threshold", "1.5"], "threshold"),
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/afile", "--image", "{t}/afile", "--threshold", "inf"], "threshold"),
    (["index", "search", "--index", "{t}/afile", "--text", "a", "--top-k", "0"], "top_k"),
    (["index", "search", "--index", "{t}/afile", "--text", "a", "--top-k", "20000000"], "top_k"),
    (["index", "search", "--index", "{t}/afile", "--text", "a", "--top-k", "many"], "top-k"),
    (["multimodal", "search", "--output-dir", "{t}/empty", "--text", "a", "--top-k", "0"], "top_k"),
    (["multimodal", "train", "--use-sample-data", "--epochs", "0", "--output-dir", "{t}/runs/mm"], "epochs"),
    (["multimodal", "train", "--use-sample-data", "--learning-rate", "-1", "--output-dir", "{t}/runs/mm"], "learning_rate"),
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet", "--limit", "0"], "limit"),
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet", "--batch-size", "0"], "batch_size"),
    (["lora", "train", "--data-dir", "{t}/empty", "--output-dir", "{t}/runs", "--epochs", "-1"], "epochs"),
    # -- wrong kinds of files
    (["docclass", "export", "--checkpoint", "{t}/notes.txt", "--out", "{t}/out/m.onnx"], "notes.txt"),
    (["docclass", "export", "--checkpoint", "{t}/evil.ckpt", "--out", "{t}/out/m.onnx"], "--trust-checkpoint"),
    (["index", "search", "--index", "{t}/notes.faiss", "--text", "a"], "notes.index.parquet"),
    (["index", "build", "--embeddings", "{t}/e.parquet", "--index-out", "{t}/out/x.index"], ".faiss"),
    (["map", "--embeddings", "{t}/notes.txt", "--out", "{t}/out/m.png"], "notes.txt"),
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/vectors.npy", "--image", "{t}/afile"], "not a docclass bank"),
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/notes.txt", "--image", "{t}/afile"], "not a docclass bank"),
    (["docclass", "evaluate", "--model", "{t}/notes.txt", "--templates", "{t}/empty"], "notes.txt"),
    # -- unknown keys, choices, combinations
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet", "poool=mean"], "poool"),
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet", "--pool", "max"], "pool"),
    (["index", "build", "--embeddings", "{t}/afile", "--index-out", "{t}/out/x.faiss", "--type", "lsh"], "type"),
    (["index", "search", "--index", "{t}/afile"], "--text"),
    (["map", "--embeddings", "{t}/afile", "--output-dir", "{t}/empty"], "exactly one"),
    (["docclass", "train", "--cfg-name", "no_such_preset"], "no_such_preset"),
    (["docclass", "train", "--config", "{t}/notes.txt"], "notes.txt"),
    (["runs", "--runs", "{t}/empty", "--status", "zombie"], "status"),
    # -- detect: checkpoints that run code, outputs under a file, devices, numbers
    (["detect", "train", "-d", "{t}/data.yaml", "--model", "{t}/evil.pt", "-o", "{t}/out"], "--trust-checkpoint"),
    (["detect", "val", "-d", "{t}/afile", "--model", "{t}/evil.pt", "-o", "{t}/out"], "--trust-checkpoint"),
    (["detect", "predict", "--model", "{t}/evil.pt", "--source", "{t}/empty", "-o", "{t}/out"], "--trust-checkpoint"),
    (["detect", "export", "--model", "{t}/evil.pt", "--output", "{t}/out/m.onnx"], "--trust-checkpoint"),
    (["detect", "train", "-d", "{t}/missing.yaml", "-o", "{t}/out"], "--data-dir"),
    (["detect", "train", "-d", "{t}/afile", "-o", "{t}/afile/runs"], "is a file"),
    (["detect", "val", "-d", "{t}/afile", "--model", "{t}/evil.pt", "-o", "{t}/afile/runs"], "is a file"),
    (["detect", "export", "--model", "{t}/evil.pt", "--output", "{t}/afile/m.onnx"], "is a file"),
    (["detect", "train", "-d", "{t}/afile", "-o", "{t}/out", "--device", "gpu0"], "--device"),
    (["detect", "train", "-d", "{t}/afile", "-o", "{t}/out", "--epochs", "0"], "epochs"),
    (["detect", "train", "--resume", "{t}/empty", "-o", "{t}/out"], "--resume"),
    (["detect", "predict", "--model", "{t}/evil.pt", "--source", "{t}/missing", "-o", "{t}/out"], "--source"),
    (["detect", "predict", "--model", "{t}/notes.txt", "--source", "{t}/empty", "-o", "{t}/out"], "notes.txt"),
    (["detect", "predict", "--model", "{t}/evil.pt", "--source", "{t}/empty", "--conf", "2"], "conf"),
]


@pytest.fixture
def bad_world(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notes.txt").write_text("not a model, not an image\n: [")
    (tmp_path / "notes.faiss").write_text("not an index")
    np.save(tmp_path / "vectors.npy", np.zeros((3, 4), np.float32))
    (tmp_path / "e.parquet").write_bytes(b"PAR1")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: empty\nval: empty\nnames: {0: a}\n")  # valid, no images
    import torch

    class Code:
        def __reduce__(self):
            return (open, (str(tmp_path / "marker"), "w"))

    torch.save({"payload": Code()}, tmp_path / "evil.ckpt")
    torch.save({"epoch": 1, "model": Code()}, tmp_path / "evil.pt")  # an Ultralytics-looking .pt
    return tmp_path


def _snapshot(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files} | {
        os.path.relpath(os.path.join(d, s), root) for d, subs, _ in os.walk(root) for s in subs}


def test_the_table_has_at_least_forty_bad_inputs():
    assert len(CASES) >= 40


@pytest.mark.parametrize("args,names", CASES, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, names, bad_world, cli):
    before = _snapshot(bad_world)
    result = cli(*[a.format(t=bad_world) for a in args])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert names in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert _snapshot(bad_world) == before, "a refused command left files behind"
    assert not (bad_world / "marker").exists()


@pytest.mark.parametrize("args", [
    ["map", "--embeddings", "{t}/afile", "--out", "{t}/afile/m.png"],
    ["embed", "--image-dir", "{t}/empty", "--out", "{t}/afile/e.parquet"],
    ["multimodal", "search", "--output-dir", "{t}/missing", "--text", "a"],
    ["docclass", "export", "--checkpoint", "{t}/afile", "--out", "{t}/afile/m.onnx"],
    ["detect", "train", "-d", "{t}/missing.yaml", "-o", "{t}/out"],
    ["detect", "train", "-d", "{t}/afile", "-o", "{t}/afile/runs"],
])
def test_refusals_come_before_any_heavy_import(args, bad_world):
    """A fresh process: the checks run before any heavy library is imported (checked by what was
    imported, not by seconds, so a busy machine cannot fail it)."""
    from guards import kitaeru_with_import_probe

    result, heavy = kitaeru_with_import_probe(*[a.format(t=bad_world) for a in args])
    assert result.returncode == 2 and result.stderr.startswith("error:"), result.stderr
    assert not heavy, f"imported before the refusal: {sorted(heavy)}"


# ---- mistakes found before any model loads, with no run folder left --------------------------------
def _scene_folder(root, name: str, metadata: str | bytes | None, *, image: bool = True):
    """A scene folder whose ``scenes_metadata.json`` holds ``metadata`` (None: no file at all)."""
    from PIL import Image

    folder = root / name
    (folder / "images").mkdir(parents=True)
    if image:
        Image.new("RGB", (8, 8)).save(folder / "images" / "a.png")
    if metadata is not None:
        data = metadata if isinstance(metadata, bytes) else metadata.encode()
        (folder / "scenes_metadata.json").write_bytes(data)
    return folder


@pytest.fixture
def mistakes_world(tmp_path):
    """Inputs that are wrong in ways a check can see without any model: scene folders, a nuScenes
    root with an unreadable table, data.yaml files, a symlink out of a data folder."""
    from PIL import Image

    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "x.png")
    entry = '{"scene_id": "%s", "description": "a road", "image_path": "%s"}'
    _scene_folder(tmp_path, "binary", b"\x00\xff\xfe\x00")
    _scene_folder(tmp_path, "malformed", '[{"scene_id": "a",')
    _scene_folder(tmp_path, "nokeys", '[{"scene_id": "a", "description": "a road"}]')
    _scene_folder(tmp_path, "dotdot", "[" + entry % ("a", "../outside/x.png") + "]")
    _scene_folder(tmp_path, "absolute", "[" + entry % ("a", str(outside / "x.png")) + "]")
    _scene_folder(tmp_path, "dups", "[" + entry % ("a", "images/a.png") + "," + entry % ("a", "images/a.png") + "]")
    linked = _scene_folder(tmp_path, "symlink", "[" + entry % ("a", "images/b.png") + "]")
    (linked / "images" / "b.png").symlink_to(outside / "x.png")
    (tmp_path / "emptyscenes").mkdir()
    nus = tmp_path / "nus" / "v1.0-mini"
    nus.mkdir(parents=True)
    (nus / "scene.json").write_bytes(b"\x00 not a table")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.new("RGB", (8, 8)).save(pictures / "in.png")
    (pictures / "out.png").symlink_to(outside / "x.png")
    (tmp_path / "nonames.yaml").write_text("path: .\ntrain: empty\nval: empty\n")
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    (tmp_path / "nosplit.yaml").write_text("path: .\ntrain: nowhere\nval: empty\nnames: {0: a}\n")
    return tmp_path


MM = ["multimodal", "train", "--output-dir", "{t}/runs/mm"]
EARLY = [
    # multimodal: the scene source and the encoder names
    ([*MM, "--data-dir", "{t}/emptyscenes"], "data folder is empty"),
    ([*MM, "--data-dir", "{t}/binary"], "not UTF-8"),
    ([*MM, "--data-dir", "{t}/malformed"], "not valid JSON"),
    ([*MM, "--data-dir", "{t}/nokeys"], "missing 'image_path'"),
    ([*MM, "--data-dir", "{t}/dotdot"], "escapes the data folder"),
    ([*MM, "--data-dir", "{t}/absolute"], "is absolute"),
    ([*MM, "--data-dir", "{t}/dups"], "duplicate scene_id"),
    ([*MM, "--data-dir", "{t}/symlink"], "leads outside the data folder"),
    ([*MM, "--nuscenes-path", "{t}/nus"], "scene.json"),
    ([*MM, "--use-sample-data", "--image-encoder", "resnet:r50"], "--image-encoder"),
    ([*MM, "--use-sample-data", "--image-encoder", "open_clip:No-Such-Model"], "No-Such-Model"),
    (["multimodal", "train", "--use-sample-data", "--output-dir", "{t}/afile/mm"], "is a file"),
    (["multimodal", "train", "--use-sample-data", "--output-dir", "/proc/kitaeru-mm"], "/proc"),
    (["multimodal", "search", "--output-dir", "{t}/empty", "--text", ""], "--text"),
    (["multimodal", "search", "--output-dir", "{t}/empty", "--image", "{t}/missing.png"], "--image"),
    # docclass: the pool, the strategy, names that would leave --output-dir
    (["docclass", "train", "--data-dir", "{t}/empty", "--output-dir", "{t}/runs"], "no template images found"),
    (["docclass", "train", "--strategy", "fsdp", "--device", "cpu", "--output-dir", "{t}/runs"], "fsdp"),
    (["docclass", "train", "--run-name", "../../x", "--output-dir", "{t}/runs"], "--run-name"),
    (["docclass", "train", "name=../escaped", "--output-dir", "{t}/runs"], "name"),
    (["docclass", "train", "--output-dir", "{t}/afile/runs"], "is a file"),
    (["docclass", "train", "--output-dir", "/sys/kitaeru-runs"], "/sys"),
    # detect: data.yaml content and run names
    (["detect", "train", "-d", "{t}/nonames.yaml", "-o", "{t}/out"], "'names'"),
    (["detect", "train", "-d", "{t}/broken.yaml", "-o", "{t}/out"], "not valid YAML"),
    (["detect", "train", "-d", "{t}/nosplit.yaml", "-o", "{t}/out"], "nowhere"),
    (["detect", "train", "-d", "{t}/nosplit.yaml", "-o", "{t}/out", "--run-prefix", "../x"], "--name"),  # the earlier spelling of --name
    # embed and index: links out of the folder, empty queries, missing query images
    (["embed", "--image-dir", "{t}/pictures", "--out", "{t}/out/e.parquet"], "leads outside the data folder"),
    (["embed", "--image-dir", "{t}/pictures", "--out", "/proc/kitaeru/e.parquet"], "/proc"),
    (["index", "search", "--index", "{t}/afile", "--text", " "], "--text"),
    (["index", "search", "--index", "{t}/afile", "--image", "{t}/missing.png"], "--image"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,names", EARLY, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(EARLY)])
def test_mistakes_are_found_before_any_model_loads_and_leave_no_run_folder(args, names, mistakes_world):
    """A fresh process per case: exit 2, one line naming the problem, no heavy library imported
    before it (what was imported, never how long it took), and nothing written: no run folder."""
    from guards import kitaeru_with_import_probe

    before = _snapshot(mistakes_world)
    result, heavy = kitaeru_with_import_probe(*[a.format(t=mistakes_world) for a in args])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and names in lines[0], result.stderr
    assert not heavy, f"imported before the refusal: {sorted(heavy)}"
    assert _snapshot(mistakes_world) == before, "a refused command left files behind"


NUMBERS = [
    (["multimodal", "train", "--use-sample-data", "--learning-rate", "inf"], "learning_rate"),
    (["multimodal", "train", "--use-sample-data", "--learning-rate", "-inf"], "learning_rate"),
    (["multimodal", "train", "--use-sample-data", "--epochs", "100000000000000000000000"], "epochs"),
    (["docclass", "train", "--lr", "inf"], "learning_rate"),
    (["docclass", "train", "optim.lr=inf"], "optim.learning_rate"),
    (["docclass", "train", "loss.scale=inf"], "loss.scale"),
    (["docclass", "train", "--epochs", "10000001"], "epochs"),
    (["detect", "train", "-d", "{t}/data.yaml", "lr0=inf"], "lr0"),
    (["detect", "train", "-d", "{t}/data.yaml", "lr0=nan"], "lr0"),
    (["detect", "train", "-d", "{t}/data.yaml", "train.lr0=inf"], "lr0"),
    (["detect", "train", "-d", "{t}/data.yaml", "--epochs", "100000000000000000000000"], "epochs"),
    (["detect", "train", "-d", "{t}/data.yaml", "--image-size", "100000"], "image_size"),
    (["detect", "predict", "--model", "{t}/afile", "--source", "{t}/empty", "--image-size", "65536"], "image_size"),
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet", "--image-size", "30000"], "image_size"),
    (["lora", "generate", "--lora-scale", "inf"], "lora_scale"),
    (["lora", "train", "--learning-rate", "inf"], "learning_rate"),
]


@pytest.mark.parametrize("args,names", NUMBERS, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(NUMBERS)])
def test_numbers_are_finite_and_bounded_at_the_schema(args, names, bad_world, cli):
    """``inf`` is refused wherever ``nan`` is (typed fields and the arguments handed to Ultralytics),
    and epochs / image sizes have an upper bound: one line, exit 2, nothing written."""
    before = _snapshot(bad_world)
    result = cli(*[a.format(t=bad_world) for a in args], "--output-dir", bad_world / "runs") \
        if args[0] in ("multimodal", "docclass") else cli(*[a.format(t=bad_world) for a in args])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(lines) == 1 and names in lines[0] and ("finite" in lines[0] or "less than" in lines[0]), lines
    assert _snapshot(bad_world) == before


def test_index_auto_refuses_parameters_it_would_not_use(tmp_path, cli):
    """``--type auto`` no longer drops ``--pq-m`` silently: a value that cannot divide the dimension,
    or any parameter on a collection small enough for the exact index, is one line and no file."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.standard_normal((200, 16)).astype(np.float32))
    out = tmp_path / "out" / "x.faiss"
    for flags, expected in ((["--pq-m", "7"], "must divide the dimension 16"), (["--pq-m", "4"], "flat")):
        result = cli("index", "build", "--embeddings", tmp_path / "v.npy", "--index-out", out, "--type", "auto", *flags)
        assert result.exit_code == 2 and expected in result.stderr and "--pq-m" in result.stderr, result.stderr
        assert not out.exists()
    assert cli("index", "build", "--embeddings", tmp_path / "v.npy", "--index-out", out, "--type", "auto").exit_code == 0


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
def test_nuscenes_images_outside_the_root_are_refused(how, shared_data, tmp_path, cli):
    """A nuScenes table naming ``../x.jpg``, or a camera file that is a link out of the root, is one
    line naming the scene, before any run folder exists (the image is never read)."""
    import json
    import shutil

    root = tmp_path / "nus"
    shutil.copytree(shared_data / "nuscenes-scene-0061", root)
    outside = tmp_path / "outside.jpg"
    table = root / "v1.0-test" / "sample_data.json"
    records = json.loads(table.read_text())
    front = next(r for r in records if "/CAM_FRONT/" in r["filename"])
    shutil.copyfile(root / front["filename"], outside)
    if how == "dotdot":
        front["filename"] = "../outside.jpg"
        table.write_text(json.dumps(records))
    else:
        (root / front["filename"]).unlink()
        (root / front["filename"]).symlink_to(outside)
    result = cli("multimodal", "train", "--nuscenes-path", root, "--output-dir", tmp_path / "runs" / "mm")
    assert result.exit_code == 2 and "leads outside the data folder" in result.stderr and "scene-0061" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("encoder", ["torchvision:no_such_net", "timm:no_such_net"])
def test_unknown_library_architecture_is_refused_before_the_run_folder(encoder, tmp_path, cli):
    """Checking a torchvision/timm name needs the library's list (torch is imported), but no model
    and no run folder: the corrected re-run finds nothing in its way."""
    out = tmp_path / "runs" / "mm"
    result = cli("multimodal", "train", "--use-sample-data", "--image-encoder", encoder, "--output-dir", out)
    assert result.exit_code == 2 and "--image-encoder" in result.stderr and "no_such_net" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()
