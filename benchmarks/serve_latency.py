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
latency, requests/s) and the same number from ``--concurrency`` client threads (requests/s).
The last line is the ratio of plain to kitaeru p50 latency.

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
def plain_app(output_dir: str, device: str):
    """A FastAPI app that searches the way the original backend did: a Python loop over the list."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Form

    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        from kitaeru.models.scene_query import load_query_encoder

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


def run_plain_server(output_dir: str, port: int, device: str) -> None:
    import uvicorn

    uvicorn.run(plain_app(output_dir, device), host="127.0.0.1", port=port, log_level="warning")


# ---- preparing the data -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_small_output(target: Path) -> Path:
    """A tiny multimodal output on the built-in sample data (its encoders are what we need)."""
    cmd = [sys.executable, "-m", "kitaeru", "multimodal", "train", "--use-sample-data", "--epochs", "1",
           "--output-dir", str(target), "--device", "cpu"]
    print("training the query encoders:", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return target


def generate_vector_db(source: Path, target: Path, scenes: int, seed: int = 0) -> dict:
    """A copy of ``source``'s encoders with a generated ``scenes``-scene vector DB (versioned shape)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("vector_db.json", "tensorboard", "scenes_with_umap.json"))
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


def measure(url: str, requests: int, concurrency: int, top_k: int) -> dict:
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(10):  # warm-up: first-request allocations, caches
            client.post("/text", data={"query": QUERIES[i % len(QUERIES)], "top_k": top_k}).raise_for_status()
        latencies = []
        started = time.perf_counter()
        for i in range(requests):
            t0 = time.perf_counter()
            r = client.post("/text", data={"query": QUERIES[i % len(QUERIES)], "top_k": top_k})
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
        sequential = requests / (time.perf_counter() - started)

    def one(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            for j in range(i, requests, concurrency):
                c.post("/text", data={"query": QUERIES[j % len(QUERIES)], "top_k": top_k}).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))
    concurrent = requests / (time.perf_counter() - started)
    ms = sorted(x * 1000 for x in latencies)
    return {
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))],
        "mean_ms": statistics.fmean(ms),
        "rps_sequential": sequential,
        "rps_concurrent": concurrent,
    }


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
    parser.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        run_plain_server(args.output_dir, args.port, args.device)
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

        results = {}
        servers = {
            "plain": [sys.executable, __file__, "--plain-server", "--output-dir", str(big), "--device", args.device],
            "kitaeru": [sys.executable, "-m", "kitaeru", "serve", "--output-dir", str(big), "--device", args.device,
                        "--log-level", "warning"],
        }
        for name, cmd in servers.items():
            port = free_port()
            proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}"
                t0 = time.perf_counter()
                wait_healthy(url, proc)
                startup = time.perf_counter() - t0
                results[name] = measure(url, args.requests, args.concurrency, args.top_k)
                results[name]["startup_s"] = startup
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            r = results[name]
            print(f"{name:8s} /text over {args.scenes} scenes: p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
                  f"mean {r['mean_ms']:.1f} ms, {r['rps_sequential']:.1f} req/s sequential, "
                  f"{r['rps_concurrent']:.1f} req/s with {args.concurrency} clients (start-up {startup:.1f} s)", flush=True)
        plain, ours = results["plain"], results["kitaeru"]
        print(f"ratio plain/kitaeru: p50 latency {plain['p50_ms'] / ours['p50_ms']:.2f}x, "
              f"p95 latency {plain['p95_ms'] / ours['p95_ms']:.2f}x, "
              f"requests/s {ours['rps_concurrent'] / plain['rps_concurrent']:.2f}x")


if __name__ == "__main__":
    main()
