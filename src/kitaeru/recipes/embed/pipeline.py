"""``kitaeru embed``: build data → build model → embed → summarise → save.

The loop keeps the accelerator busy while worker processes decode the next batches; vectors go to
numbered shards as soon as a shard is full (see :mod:`.output`), so memory stays bounded by the
prefetched batches plus one shard, whatever the folder size.
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from kitaeru.core.vectors import l2_normalize
from kitaeru.core.console import info as say, print_table, track, warn
from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.storage import atomic_write_json, is_remote
from kitaeru.index.embeddings_io import EmbeddingInfo
from kitaeru.recipes.embed.config import EmbedConfig
from kitaeru.recipes.embed.data import (
    canonical_path, default_workers, list_images, make_loader, pending_files, read_texts,
)
from kitaeru.recipes.embed.output import ShardedEmbeddingWriter, output_kind, summary_path

WARN_SKIPPED = 10  # unreadable images warned about one by one; the summary lists all of them


# ---- build data ------------------------------------------------------------------------------
def build_inputs(cfg: EmbedConfig) -> list[str]:
    """The images (canonical paths) or texts this job is about; fails fast before any model loads."""
    output_kind(cfg.output)  # a bad --out name is reported before the work starts
    if cfg.text_mode:
        if cfg.resume:
            raise ConfigError("--resume applies to --image-dir jobs (texts are re-embedded in one go)")
        return read_texts(cfg.texts, cfg.text)
    return list_images(cfg.image_dir)


# ---- build model -----------------------------------------------------------------------------
def resolve_pretrained(model: str, pretrained: str) -> str | None:
    """``--pretrained`` as the encoder factory takes it: none → None, ``openclip`` → ``default`` for
    timm/torchvision models, a local file → its absolute path (so the index can re-create the model)."""
    from kitaeru.index.queries import pretrained_argument
    from kitaeru.models.image_encoders import parse_name

    value = pretrained_argument(pretrained)
    if value is None:
        return None
    if value == "openclip" and parse_name(model)[0] != "open_clip":
        return "default"
    local = Path(value).expanduser()
    if local.is_file():
        return str(local.resolve())
    if any(sep in value for sep in ("/", "\\")) or value.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise ConfigError(f"--pretrained: checkpoint file '{value}' not found")
    return value


def build_encoder(cfg: EmbedConfig, device: str) -> Any:
    """The frozen encoder, created the same way ``index search`` re-creates it (seeded random init)."""
    from kitaeru.index.queries import create_encoder
    from kitaeru.models.image_encoders import parse_name

    if cfg.text_mode and parse_name(cfg.model)[0] != "open_clip":  # known before loading anything
        raise ConfigError(f"--texts/--text: model '{cfg.model}' has no text tower; use a CLIP-family model "
                          "(vit_l_14, open_clip:ViT-B-32, ...)")
    encoder = create_encoder(cfg.model, pretrained=resolve_pretrained(cfg.model, cfg.pretrained), pool=cfg.pool,
                             image_size=cfg.image_size, resize=cfg.resize, device=device)
    if cfg.text_mode and not encoder.supports_text:
        raise ConfigError(f"--texts/--text: model '{cfg.model}' has no text tower; use a CLIP-family model "
                          "(vit_l_14, open_clip:ViT-B-32, ...)")
    return encoder


def embedding_info(cfg: EmbedConfig, encoder: Any) -> EmbeddingInfo:
    return EmbeddingInfo(model=cfg.model, pretrained=str(encoder.pretrained), pool=encoder.pool,
                         image_size=int(encoder.image_size), resize=cfg.resize, normalized=cfg.normalize,
                         dim=int(encoder.dim), kind="text" if cfg.text_mode else "image")


# ---- embed -----------------------------------------------------------------------------------
def embed_images(cfg: EmbedConfig, encoder: Any, paths: list[str], writer: ShardedEmbeddingWriter,
                 device: str, workers: int) -> dict[str, Any]:
    """Decode in workers, encode in batches, hand vectors to the writer; returns counts and timing."""
    from kitaeru.models.image_encoders import preprocess
    from kitaeru.recipes.embed.gpu_batches import decode_batch, make_gpu_loader, use_gpu_decode

    on_gpu = use_gpu_decode(cfg.gpu_decode, device)
    if on_gpu:
        loader = make_gpu_loader(paths, encoder, batch_size=cfg.batch_size, workers=workers)
        transform = partial(preprocess, size=encoder.image_size, mean=encoder.mean, std=encoder.std, resize=encoder.resize)
        batches = (decode_batch(items, encoder, device, transform) for items in loader)
    else:
        loader = make_loader(paths, encoder, batch_size=cfg.batch_size, workers=workers,
                             pin_memory=device.startswith("cuda"))
        batches = iter(loader)
    decode = {"decoder": "gpu (nvJPEG) + cpu for other files" if on_gpu else "cpu", "gpu_decoded": 0, "cpu_fallbacks": 0}
    skipped: list[dict[str, str]] = []
    embedded = 0
    start = time.perf_counter()
    try:
        for batch in track(batches, "embedding images", total=len(loader)):
            decode["gpu_decoded"] += batch.get("gpu_decoded", 0)
            decode["cpu_fallbacks"] += batch.get("cpu_fallbacks", 0)
            for item in batch["skipped"]:
                if len(skipped) < WARN_SKIPPED:
                    warn(f"skipped {item['path']}: {item['reason']}")
                elif len(skipped) == WARN_SKIPPED:
                    warn("more unreadable images are skipped; all are listed in the summary")
                skipped.append(item)
            if batch["pixels"] is None:
                continue
            vectors = encoder.encode(batch["pixels"]).numpy()
            writer.add(l2_normalize(vectors) if cfg.normalize else vectors, batch["rows"])
            embedded += len(batch["rows"])
    except BaseException:
        # Ctrl-C or a failure: keep every vector computed so far; --resume continues from there.
        writer.flush()
        say(f"stopped after {embedded} image(s); finished shards are in {writer.work_dir} (re-run with --resume)")
        raise
    return {"embedded": embedded, "skipped": skipped, "seconds": time.perf_counter() - start, "decode": decode}


def embed_texts(cfg: EmbedConfig, encoder: Any, texts: list[str], writer: ShardedEmbeddingWriter) -> dict[str, Any]:
    start = time.perf_counter()
    for i in track(range(0, len(texts), cfg.batch_size), "embedding texts"):
        chunk = texts[i: i + cfg.batch_size]
        vectors = np.asarray(encoder.encode_text(chunk), dtype=np.float32)
        rows = [{"path": None, "width": None, "height": None, "text": t} for t in chunk]
        writer.add(l2_normalize(vectors) if cfg.normalize else vectors, rows)
    return {"embedded": len(texts), "skipped": [], "seconds": time.perf_counter() - start}


# ---- summarise and save ---------------------------------------------------------------------
def count_rows(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files if str(f).endswith(".parquet"))


def summarize(cfg: EmbedConfig, info: EmbeddingInfo, *, found: int, already: int, result: dict[str, Any],
              files: list[Path], device: Any, workers: int, wall: float) -> dict[str, Any]:
    from kitaeru.core.versions import library_versions

    seconds = result["seconds"]
    return {
        "status": "completed",
        "output": cfg.output,
        "files": [str(f) for f in files],
        **info.as_dict(),
        "inputs_found": found,
        "already_embedded": already,
        "embedded": result["embedded"],
        "skipped_inputs": {"count": len(result["skipped"]), "items": result["skipped"]},
        "rows_in_output": count_rows(files),
        "embed_seconds": round(seconds, 3),
        "items_per_second": round(result["embedded"] / seconds, 2) if seconds > 0 and result["embedded"] else 0.0,
        "wall_time_seconds": round(wall, 3),
        "device": device.as_dict(),
        "workers": workers,
        "batch_size": cfg.batch_size,
        "decode": result.get("decode", {"decoder": "cpu"}),
        "config": {**cfg.model_dump(mode="json"),
                   # absolute, so readers of the summary (serve) find the folder from any directory
                   "image_dir": canonical_path(cfg.image_dir) if cfg.image_dir else None},
        "library_versions": library_versions(),
    }


def print_summary(summary: dict[str, Any]) -> None:
    keys = ("out", "kind", "model", "pretrained", "pool", "image_size", "dim", "normalized", "inputs_found",
            "already_embedded", "embedded", "rows_in_output", "embed_seconds", "items_per_second", "wall_time_seconds")
    rows = [(k, summary[k]) for k in keys if k in summary]
    rows.append(("skipped (unreadable)", summary["skipped_inputs"]["count"]))
    print_table("embed summary", ["field", "value"], rows)
    items = summary["skipped_inputs"]["items"]
    if items:
        print_table(f"skipped inputs ({len(items)})", ["path", "reason"], [(i["path"], i["reason"]) for i in items])


# ---- the whole job ---------------------------------------------------------------------------
def run_embed(cfg: EmbedConfig) -> dict[str, Any]:
    """Run one embedding job on this machine (one process, or this rank's share) and return its
    summary (also written beside the output); ``--engine spark`` goes to :mod:`.spark` instead."""
    from kitaeru.core.distributed import place

    if place().world_size > 1:
        return run_rank(cfg)
    if not is_remote(cfg.output):
        return run_local(cfg, cfg.output)
    if cfg.resume:
        raise ConfigError("--resume needs a local --out (a remote output is only uploaded once complete)")
    from kitaeru.core.storage import filesystem

    fs, remote = filesystem(cfg.output)
    name = remote.rstrip("/").rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(prefix="kitaeru-embed-") as tmp:
        local_out = str(Path(tmp) / name)
        summary = run_local(cfg, local_out)
        remote_parent = remote.rstrip("/").rsplit("/", 1)[0] if "/" in remote.rstrip("/") else ""
        url_parent = cfg.output.rstrip("/").rsplit("/", 1)[0]
        uploaded = []
        for f in [Path(p) for p in summary["files"]] + [summary_path(local_out)]:
            rel = f.relative_to(tmp).as_posix()
            fs.put_file(str(f), f"{remote_parent}/{rel}" if remote_parent else rel)
            uploaded.append(f"{url_parent}/{rel}")
        summary["files"] = uploaded[:-1]
        summary["output"] = cfg.output
    return summary


def check_parts_output(cfg: EmbedConfig, how: str) -> None:
    """Several writers (ranks, Spark tasks) share one local folder of Parquet parts."""
    from kitaeru.recipes.embed.output import output_kind

    if cfg.text_mode:
        raise ConfigError(f"{how} embeds --image-dir jobs (embed texts in one process)")
    if is_remote(cfg.output) or output_kind(cfg.output) != "folder":
        raise ConfigError(f"--output: {how} writes a local folder of Parquet parts (one per rank or task); give a "
                          f"folder name without suffix, not {cfg.output} (kitaeru index build reads the folder)")


def share(inputs: list[str], index: int, count: int, batch_size: int = 1) -> list[str]:
    """Writer ``index`` of ``count``'s share of the sorted inputs: contiguous whole batches (so every
    batch is the one-process run's batch, and so are its vectors, bit for bit), the writers' batch
    counts differing by at most one; the parts, in name order, hold the one-process order."""
    batches = -(-len(inputs) // batch_size)
    base, extra = divmod(batches, count)
    start = index * base + min(index, extra)
    stop = start + base + (1 if index < extra else 0)
    return inputs[start * batch_size: stop * batch_size]


def rank_prefix(rank: int) -> str:
    return f"rank{rank:05d}-"


def run_rank(cfg: EmbedConfig) -> dict[str, Any]:
    """One torchrun rank: embed this rank's share of the inputs into ``--out/part-rankRRRRR-NNNNN.parquet``
    (``--resume`` continues each rank's own parts; same world size). When every rank is done, rank 0
    writes the folder's ``_summary.json`` over all parts."""
    from kitaeru.core.distributed import place, stdout_to_stderr_off_rank_zero

    here = place()
    check_parts_output(cfg, "torchrun")
    stdout_to_stderr_off_rank_zero()  # stdout holds rank 0's combined result only
    summary = run_local(cfg, cfg.output, part=(here.rank, here.world_size))
    if _wait_for_every_rank() and here.is_zero:
        return combine_summaries(cfg, cfg.output)
    return summary


def _wait_for_every_rank() -> bool:
    """A gloo barrier among the launcher's processes (False when there is no process group to join)."""
    import os

    try:
        import torch.distributed as dist

        if not dist.is_available() or "MASTER_ADDR" not in os.environ:
            return False
        created = not dist.is_initialized()
        if created:
            dist.init_process_group("gloo")
        dist.barrier()
        if created:
            dist.destroy_process_group()
        return True
    except Exception as exc:  # noqa: BLE001 - the parts are written; only the combined summary is missing
        warn(f"could not wait for the other ranks ({str(exc).splitlines()[0]}); each rank's summary is beside its parts")
        return False


def part_summary_path(out: str, label: str) -> Path:
    return Path(out) / f"_summary.{label}.json"


def combine_summaries(cfg: EmbedConfig, out: str) -> dict[str, Any]:
    """The folder's ``_summary.json`` from every writer's ``_summary.<writer>.json``: counts summed,
    every part listed, speed = all embedded items over the slowest writer's embedding time."""
    import json

    parts = sorted(Path(out).glob("_summary.*.json"))
    summaries = [json.loads(p.read_text(encoding="utf-8")) for p in parts]
    files = sorted(str(f) for f in Path(out).glob("part-*.parquet"))
    first = dict(summaries[0])
    embedded = sum(s["embedded"] for s in summaries)
    seconds = max(s["embed_seconds"] for s in summaries)
    skipped = [item for s in summaries for item in s["skipped_inputs"]["items"]]
    first.update({
        "output": cfg.output, "files": files, "writers": len(summaries),
        "inputs_found": sum(s["inputs_found"] for s in summaries),
        "already_embedded": sum(s["already_embedded"] for s in summaries),
        "embedded": embedded, "skipped_inputs": {"count": len(skipped), "items": skipped},
        "rows_in_output": count_rows([Path(f) for f in files]), "embed_seconds": round(seconds, 3),
        "items_per_second": round(embedded / seconds, 2) if seconds > 0 and embedded else 0.0,
        "wall_time_seconds": max(s["wall_time_seconds"] for s in summaries),
    })
    atomic_write_json(summary_path(out), first)
    return first


def run_local(cfg: EmbedConfig, out: str, *, part: tuple[int, int] | None = None,
               prefix: str | None = None, inputs: list[str] | None = None) -> dict[str, Any]:
    """Embed into ``out``; ``part=(rank, world)``: only that rank's share, into its own parts;
    ``prefix`` + ``inputs``: a Spark task's given inputs into ``part-<prefix>NNNNN.parquet``."""
    from kitaeru.core.device import resolve_device

    started = time.perf_counter()
    if inputs is None:
        inputs = build_inputs(cfg)
    label = None
    if part is not None:
        inputs = share(inputs, *part, batch_size=cfg.batch_size)
        prefix, label = rank_prefix(part[0]), f"rank{part[0]:05d}"
        say(f"rank {part[0]} of {part[1]}: {len(inputs)} image(s) of this rank's share")
    elif prefix:
        label = prefix.rstrip("-")
    device = resolve_device(cfg.device)
    say(f"loading {cfg.model} (weights: {cfg.pretrained}, pool: {cfg.pool}) on {device.device}")
    encoder = build_encoder(cfg, device.device)
    info = embedding_info(cfg, encoder)
    writer = ShardedEmbeddingWriter(out, info, resume=cfg.resume, shard_size=cfg.shard_size, with_text=cfg.text_mode,
                                    part_prefix=prefix or "")
    workers = cfg.workers if cfg.workers is not None else default_workers()
    if cfg.text_mode:
        todo = inputs[: cfg.limit] if cfg.limit else inputs
        already = 0
        result = embed_texts(cfg, encoder, todo, writer)
    else:
        done = writer.done_paths()
        todo = pending_files(inputs, done, cfg.limit)
        already = sum(1 for f in inputs if f in done)
        if already:
            say(f"--resume: {already} of {len(inputs)} images are already embedded in {out}")
        if not todo:
            say("nothing left to embed")
        result = embed_images(cfg, encoder, todo, writer, device.device, workers) if todo else \
            {"embedded": 0, "skipped": [], "seconds": 0.0}
    files = writer.finalize()
    if not files and label is not None and not inputs:  # an empty share of a small job
        files = []
    elif not files:
        first = result["skipped"][0] if result["skipped"] else None
        example = f" (e.g. {first['path']}: {first['reason']})" if first else ""
        raise DataError(f"{cfg.image_dir or cfg.texts}: none of the {len(todo)} input(s) could be embedded{example}")
    summary = summarize(cfg, info, found=len(inputs), already=already, result=result, files=files, device=device,
                        workers=workers, wall=time.perf_counter() - started)
    atomic_write_json(part_summary_path(out, label) if label else summary_path(out), summary)
    return summary
