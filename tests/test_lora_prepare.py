"""kitaeru lora prepare: captions from both JSON formats, text files and defaults; split; skipped files."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from kitaeru.recipes.lora.config import CAPTION_TEMPLATE


@pytest.fixture
def plans(tmp_path, shared_data) -> Path:
    """A temp copy of 12 sample floor plans with JSON fixtures of both formats, a .txt caption, a
    corrupt file and a too-small image."""
    from PIL import Image

    src = sorted((shared_data / "floorplans").glob("*.png"))[:10]
    folder = tmp_path / "plans"
    folder.mkdir()
    for i, path in enumerate(src):
        name = f"house_{i}_2f.png" if i == 3 else path.name
        shutil.copyfile(path, folder / name)
    names = sorted(p.name for p in folder.glob("plan_*.png"))
    (folder / Path(names[0]).with_suffix(".json")).write_text(json.dumps({"grid_px": 100, "grid_mm": 1000, "floor": "2f"}))
    (folder / Path(names[1]).with_suffix(".json")).write_text(json.dumps({
        "version": "2.0", "metadata": {"floor": "1f"}, "grid": {"size_mm": 455, "size_px": 53.75},
        "layout": {"bounds": {"x": 0, "y": 0, "width": 10, "height": 8},
                   "zones": [{"id": "ldk", "type": "living", "cells": [[0, 0], [4, 3]]}],
                   "elements": [{"type": "door", "at": [2, 0]}]}}))
    (folder / Path(names[2]).with_suffix(".txt")).write_text("a hand-written caption of a tiny house\n")
    (folder / "broken.png").write_bytes(b"not a png at all")
    Image.new("RGB", (20, 20), "white").save(folder / "tiny.png")
    return folder


def test_prepare_writes_captions_split_and_skipped(cli, plans, tmp_path):
    out = tmp_path / "prepared"
    result = cli("lora", "prepare", "--images", plans, "--output-dir", out, "--val-fraction", "0.2", "--seed", "7", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 10 and summary["train"] == 8 and summary["val"] == 2
    assert summary["caption_sources"] == {"json-v1.0": 1, "json-v2.0": 1, "txt": 1, "default": 7}
    # which files got which caption source, not only how many
    assert summary["caption_files"]["txt"] == [sorted(p.name for p in plans.glob("plan_*.png"))[2]]
    assert "house_3_2f.png" in summary["caption_files"]["default"] and len(summary["caption_files"]["default"]) == 7
    assert sorted(Path(s["path"]).name for s in summary["skipped"]) == ["broken.png", "tiny.png"]
    assert "too small" in {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}["tiny.png"]

    rows = {r["file_name"]: r for r in csv.DictReader(open(out / "captions.csv", encoding="utf-8"))}
    assert len(rows) == 10 and all((out / name).is_file() for name in rows)
    by_source = {r["caption_source"]: r for r in rows.values()}
    assert by_source["json-v1.0"]["caption"] == CAPTION_TEMPLATE.format(floor="2f", grid_mm=1000)
    assert by_source["json-v1.0"]["grid_px"] == "100"
    assert by_source["json-v2.0"]["caption"] == CAPTION_TEMPLATE.format(floor="1f", grid_mm=455)
    assert by_source["txt"]["caption"] == "a hand-written caption of a tiny house"
    two_f = rows["images/house_3_2f.png"]
    assert two_f["caption_source"] == "default" and two_f["caption"] == CAPTION_TEMPLATE.format(floor="2f", grid_mm=910)

    train = [name for name, r in rows.items() if r["split"] == "train"]
    val = [name for name, r in rows.items() if r["split"] == "val"]
    assert len(train) == 8 and len(val) == 2
    # imagefolder's metadata (what the diffusers scripts read) holds the training rows only
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [line["file_name"] for line in lines] == train and all(line["text"] for line in lines)
    assert json.loads((out / "skipped.json").read_text())[0]["reason"]
    assert len(json.loads((out / "captions.json").read_text())) == 10
    assert not [p.name for p in out.iterdir() if p.name.startswith(("metadata.", "train", "val", "test"))
                and p.name != "metadata.jsonl"]

    again = cli("lora", "prepare", "-i", plans, "-o", tmp_path / "again", "--val-fraction", "0.2", "--seed", "7", "--json")
    assert json.loads(again.stdout)["val"] == 2
    assert (tmp_path / "again" / "captions.csv").read_text() == (out / "captions.csv").read_text()  # the split is seeded


def test_prepare_refuses_json_without_keys_and_writes_nothing(cli, plans, tmp_path):
    bad = sorted(plans.glob("plan_*.png"))[5].with_suffix(".json")
    bad.write_text(json.dumps({"rooms": 3}))
    out = tmp_path / "prepared"
    result = cli("lora", "prepare", "--images", plans, "--output-dir", out)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and bad.name in result.stderr and "grid_px" in result.stderr
    assert not out.exists()


def test_prepare_refuses_malformed_json(cli, plans, tmp_path):
    sorted(plans.glob("plan_*.png"))[4].with_suffix(".json").write_text("{not json")
    result = cli("lora", "prepare", "--images", plans, "--output-dir", tmp_path / "out")
    assert result.exit_code == 2 and "not valid JSON" in result.stderr and not (tmp_path / "out").exists()


def test_prepare_empty_or_missing_folder(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("lora", "prepare", "--images", empty, "--output-dir", tmp_path / "out")
    assert result.exit_code == 2 and "no images" in result.stderr and result.stderr.count("\n") == 1
    missing = cli("lora", "prepare", "--images", tmp_path / "nope", "--output-dir", tmp_path / "out")
    assert missing.exit_code == 2 and "not found" in missing.stderr
    assert not (tmp_path / "out").exists()


def test_the_built_in_floor_plans_carry_the_guides_json(tmp_path, cli):
    """`kitaeru sample floorplans` draws plans with the guide's JSON beside each, so `lora prepare`
    captions every one from its JSON (floor and grid), with no download and no shared data."""
    import json as _json

    from PIL import Image

    r = cli("sample", "floorplans", "--out", tmp_path / "plans", "--count", "6", "--size", "128", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    pngs = sorted((tmp_path / "plans").glob("*.png"))
    assert len(pngs) == 6 and all(p.with_suffix(".json").is_file() for p in pngs)
    meta = _json.loads(pngs[1].with_suffix(".json").read_text())
    assert meta["floor"] == "2f" and meta["grid_mm"] == 910 and meta["grid_px"] > 0
    pixels = Image.open(pngs[0]).convert("L").getextrema()
    assert pixels == (0, 255)  # black lines on white
    r = cli("lora", "prepare", "--images", tmp_path / "plans", "--output-dir", tmp_path / "prepared", "--json")
    assert r.exit_code == 0, r.stderr
    rows = [_json.loads(line) for line in (tmp_path / "prepared" / "metadata.jsonl").read_text().splitlines()]
    assert rows and all("floor plan" in row["text"] for row in rows)
    assert any("2f floor" in row["text"] for row in rows) or any("1f floor" in row["text"] for row in rows)
