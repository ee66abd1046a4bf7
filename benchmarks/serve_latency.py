"""Latency and throughput of ``POST /text`` on a 10k-scene vector DB: kitaeru serve vs the plain way.

Both servers run as separate processes under uvicorn on 127.0.0.1 and answer the same requests
from the same client, with the same query encoder (the trained text projector over the offline
MiniLM, loaded from the same multimodal output):

* plain: the original backend's way — the JSON list of scenes is kept as Python objects and every
  request scans it in a Python loop, one cosine similarity per scene embedding, then sorts;
* kitaeru: ``kitaeru serve --output-dir`` — the embeddings are one normalised float32 matrix per
  modality and a request is one matrix-vector product plus a partial sort.

Steps: train a tiny multimodal output on the built-in sample data (1 epoch; or reuse one with
``--output-dir``), write a generated ``vector_db.json`` with ``--scenes`` scenes beside a copy of its
encoders, start both servers, warm up, then send ``--requests`` sequential requests (p50 / p95
latency, requests/s) and the same number from ``--concurrency`` client threads (requests/s), the
two servers taking turns in slices so that other load on the machine falls on both alike. The
last line gives the ratios plain/kitaeru of p50 and p95 latency and kitaeru/plain of requests/s.

    python benchmarks/serve_latency.py                      # 10k scenes, 200 requests
    python benchmarks/serve_latency.py --scenes 50000 --requests 500 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

QUERIES = (
    "a rainy night on the highway", "turning left at a city intersection", "snow on a rural road",
    "stopping at a red light", "foggy morning with pedestrians", "夜の高速道路、雨", "晴れた日の市街地で右折",
    "two cars ahead in the dusk", "an empty road in the countryside", "braking behind a van",
)


# ---- the plain server (the original backend's search) ---------------------------------------
def plain_app(output_dir: str, device: str, threads: int | None = None):
    """A FastAPI app that searches the way the original backend did: a Python loop over the list."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Form

    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        from kitaeru.models.scene_query import load_query_encoder

        if threads:
            import torch

            torch.set_num_threads(threads)
        with open(Path(output_dir) / "vector_db.json", encoding="utf-8") as fh:
            db = json.load(fh)
        items = []
        for scene in db["scenes"]:  # two items per scene, as in the original flat list
            items.append({"vec": np.asarray(scene["text_embedding"], dtype=np.float32), "type": "text", "scene": scene})
            items.append({"vec": np.asarray(scene["image_embedding"], dtype=np.float32), "type": "image", "scene": scene})
        state["items"] = items
        state["encoder"] = load_query_encoder(output_dir, device)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "items": len(state.get("items", ()))}

    @app.post("/text")
    def text(query: str = Form(...), top_k: int = Form(5)) -> dict:
        q = np.asarray(state["encoder"].encode_text([query])[0], dtype=np.float32)
        qn = float(np.linalg.norm(q))
        scored = []
        for item in state["items"]:
            v = item["vec"]
            scored.append((float(np.dot(q, v)) / (qn * float(np.linalg.norm(v)) + 1e-12), item))
        scored.sort(key=lambda pair: pair[0], reverse=True)
        results, seen = [], set()
        for score, item in scored:
            sid = item["scene"]["scene_id"]
            if sid in seen:
                continue
            seen.add(sid)
            results.append({"scene_id": sid, "score": score, "description": item["scene"].get("description")})
            if len(results) == top_k:
                break
        return {"query": query, "results": results}

    return app


def run_plain_server(output_dir: str, port: int, device: str, threads: int | None) -> None:
    import uvicorn

    uvicorn.run(plain_app(output_dir, device, threads), host="127.0.0.1", port=port, log_level="warning")


# ---- preparing the data -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_small_output(target: Path) -> Path:
    """A tiny multimodal output on the built-in sample data (its encoders are what we need)."""
    cmd = [sys.executable, "-m", "kitaeru", "multimodal", "train", "--use-sample-data", "--sample-scenes", "40",
           "--epochs", "1", "--output-dir", str(target), "--device", "cpu"]
    print("training the query encoders:", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return target


def generate_vector_db(source: Path, target: Path, scenes: int, seed: int = 0) -> dict:
    """A copy of ``source``'s encoders with a generated ``scenes``-scene vector DB (versioned shape)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(
        "vector_db.json", "scenes_with_umap.json", "tensorboard", "weights", "cache", "sample_data"))
    with open(source / "vector_db.json", encoding="utf-8") as fh:
        base = json.load(fh)
    if isinstance(base, list):
        raise SystemExit(f"{source}/vector_db.json is in the legacy list shape; the benchmark needs the versioned one")
    template = base["scenes"]
    dims = base["embedding_dim"]
    rng = np.random.default_rng(seed)

    def unit(n: int, d: int) -> np.ndarray:
        x = rng.normal(size=(n, d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    text, image = unit(scenes, int(dims["text"])), unit(scenes, int(dims["image"]))
    records = []
    for i in range(scenes):
        t = template[i % len(template)]
        records.append({
            "scene_id": f"gen-{i:06d}", "description": t.get("description"), "location": t.get("location"),
            "image_path": t.get("image_path"), "image_url": t.get("image_url"),
            "text_embedding": [round(float(v), 6) for v in text[i]],
            "image_embedding": [round(float(v), 6) for v in image[i]],
            "umap_coords": t.get("umap_coords"), "metadata": t.get("metadata", {}),
        })
    db = {**{k: v for k, v in base.items() if k != "scenes"}, "total_scenes": scenes, "scenes": records}
    with open(target / "vector_db.json", "w", encoding="utf-8") as fh:
        json.dump(db, fh, ensure_ascii=False)
    return db


# ---- measuring ----------------------------------------------------------------------------------
def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server for {url} did not start in {timeout:.0f} s")


def sequential_latencies(client, n: int, top_k: int, offset: int = 0) -> list[float]:
    """Seconds per request for ``n`` requests sent one after another."""
    out = []
    for i in range(offset, offset + n):
        t0 = time.perf_counter()
        r = client.post("/text", data={"query": QUERIES[i % len(QUERIES)], "top_k": top_k})
        out.append(time.perf_counter() - t0)
        r.raise_for_status()
    return out


def concurrent_seconds(url: str, n: int, concurrency: int, top_k: int) -> float:
    """Wall seconds for ``n`` requests sent by ``concurrency`` client threads."""
    import httpx

    def one(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            for j in range(i, n, concurrency):
                c.post("/text", data={"query": QUERIES[j % len(QUERIES)], "top_k": top_k}).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))
    return time.perf_counter() - started


def measure_both(urls: dict[str, str], requests: int, concurrency: int, top_k: int, rounds: int = 4) -> dict:
    """Alternate the servers in ``rounds`` slices so that load from anything else on the machine
    falls on both alike; returns per-server latency percentiles and requests/s."""
    import httpx

    clients = {name: httpx.Client(base_url=url, timeout=120) for name, url in urls.items()}
    try:
        for client in clients.values():  # warm-up: first-request allocations, caches
            sequential_latencies(client, 10, top_k)
        latencies = {name: [] for name in urls}
        busy = {name: 0.0 for name in urls}
        per_round = max(1, requests // rounds)
        for r in range(rounds):
            for name, client in clients.items():
                latencies[name] += sequential_latencies(client, per_round, top_k, offset=r * per_round)
            for name, url in urls.items():
                busy[name] += concurrent_seconds(url, per_round, concurrency, top_k)
    finally:
        for client in clients.values():
            client.close()
    out = {}
    for name in urls:
        ms = sorted(x * 1000 for x in latencies[name])
        out[name] = {
            "p50_ms": statistics.median(ms),
            "p95_ms": ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))],
            "mean_ms": statistics.fmean(ms),
            "rps_sequential": len(ms) / (sum(ms) / 1000),
            "rps_concurrent": per_round * rounds / busy[name],
        }
    return out


def search_only(db_dir: Path, rounds: int = 50) -> tuple[float, float]:
    """Milliseconds per query of just the search (no HTTP, no encoding): Python loop vs matrix."""
    with open(db_dir / "vector_db.json", encoding="utf-8") as fh:
        scenes = json.load(fh)["scenes"]
    vecs = [np.asarray(s["image_embedding"], dtype=np.float32) for s in scenes]
    matrix = np.stack(vecs)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    q = vecs[0] / np.linalg.norm(vecs[0])
    t0 = time.perf_counter()
    for _ in range(rounds):
        scored = sorted(((float(np.dot(q, v)) / float(np.linalg.norm(v)), i) for i, v in enumerate(vecs)), reverse=True)[:5]
    loop = (time.perf_counter() - t0) / rounds * 1000
    t0 = time.perf_counter()
    for _ in range(rounds):
        s = matrix @ q
        top = np.argpartition(-s, 5)[:5]
        top = top[np.argsort(-s[top])]
    vectorised = (time.perf_counter() - t0) / rounds * 1000
    assert [i for _, i in scored] == top.tolist()
    return loop, vectorised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=10_000, help="scenes in the generated vector DB")
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads for the concurrent run")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--output-dir", help="reuse this multimodal output's encoders instead of training one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads per server (both servers; default: torch's choice)")
    parser.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        run_plain_server(args.output_dir, args.port, args.device, args.threads)
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("KITAERU_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory(prefix="kitaeru-serve-bench-") as tmp:
        work = Path(tmp)
        source = Path(args.output_dir) if args.output_dir else train_small_output(work / "trained")
        big = work / f"db{args.scenes}"
        generate_vector_db(source, big, args.scenes)
        size_mb = (big / "vector_db.json").stat().st_size / 1e6
        print(f"vector DB: {args.scenes} scenes, {size_mb:.1f} MB of JSON", flush=True)
        loop_ms, vec_ms = search_only(big)
        print(f"search only (1 query, {args.scenes} image vectors): python loop {loop_ms:.2f} ms, "
              f"vectorised {vec_ms:.3f} ms", flush=True)

        threads = ["--threads", str(args.threads)] if args.threads else []
        servers = {
            "plain": [sys.executable, __file__, "--plain-server", "--output-dir", str(big), "--device", args.device, *threads],
            "kitaeru": [sys.executable, "-m", "kitaeru", "serve", "--output-dir", str(big), "--device", args.device,
                        "--log-level", "warning", *threads],
        }
        procs, urls, startup = {}, {}, {}
        try:
            for name, cmd in servers.items():
                port = free_port()
                t0 = time.perf_counter()
                procs[name] = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
                urls[name] = f"http://127.0.0.1:{port}"
                wait_healthy(urls[name], procs[name])
                startup[name] = time.perf_counter() - t0
            results = measure_both(urls, args.requests, args.concurrency, args.top_k)
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=30)
        for name, r in results.items():
            print(f"{name:8s} /text over {args.scenes} scenes: p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
                  f"mean {r['mean_ms']:.1f} ms, {r['rps_sequential']:.1f} req/s sequential, "
                  f"{r['rps_concurrent']:.1f} req/s with {args.concurrency} clients (start-up {startup[name]:.1f} s)",
                  flush=True)
        plain, ours = results["plain"], results["kitaeru"]
        print(f"ratio plain/kitaeru: p50 latency {plain['p50_ms'] / ours['p50_ms']:.2f}x, "
              f"p95 latency {plain['p95_ms'] / ours['p95_ms']:.2f}x, "
              f"requests/s {ours['rps_concurrent'] / plain['rps_concurrent']:.2f}x")


if __name__ == "__main__":
    main()
