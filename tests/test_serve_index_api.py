"""The search API over an embed/index pair, through a real uvicorn server on 127.0.0.1.

The index is made by the real CLI (``kitaeru embed`` with a random-init OpenCLIP ViT-S-32, then
``kitaeru index build``) over real images from ../shared/data. Extra index rows point outside the
data folder (an absolute path, as a symlink's real path would be stored, and ``..`` paths), and a file
becomes a symlink to the outside after indexing: none of those may be served. (``kitaeru embed``
itself refuses a symlink that leads out of its folder: tests/test_bad_inputs.py.)
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from guards import HANG_GUARD_S
from serve_helpers import LIMIT, chunked_multipart, running_api

MODEL = "open_clip:ViT-S-32"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, shared_data):
    """An index over 8 COCO images + 1 nuScenes frame, plus four crafted rows whose paths leave the
    folder or are not images."""
    from kitaeru.cli import run

    root = tmp_path_factory.mktemp("serve_index")
    images = root / "data" / "images"
    outside = root / "outside"
    images.mkdir(parents=True)
    outside.mkdir()
    for f in sorted((shared_data / "coco8" / "images").rglob("*.jpg")):
        shutil.copy(f, images / f.name)
    front = sorted((shared_data / "nuscenes-scene-0061" / "samples" / "CAM_FRONT").glob("*.jpg"))[0]
    shutil.copy(front, images / "scene-0061-front.jpg")
    secret = outside / "secret.jpg"
    shutil.copy(images / "000000000049.jpg", secret)
    (images / "notes.txt").write_text("not an image")

    emb, index_path = root / "e.parquet", root / "scenes.faiss"
    assert run(["embed", "--model", MODEL, "--pretrained", "none", "--image-dir", str(images), "--out", str(emb),
                "--batch-size", "16", "--device", "cpu"]) == 0
    assert run(["index", "build", "--embeddings", str(emb), "--index-out", str(index_path), "--type", "flat"]) == 0

    import pyarrow as pa

    from kitaeru.index.faiss_index import load_index

    index = load_index(index_path)
    crafted = [str(secret.resolve()), str(images / ".." / ".." / "outside" / "secret.jpg"), "../../outside/secret.jpg",
               str(images / "notes.txt")]
    vectors = -index.reconstruct_all()[: len(crafted)]  # far from every real image: never a top hit
    index.add(vectors, pa.table({"path": crafted}))
    index.save(index_path)
    paths = index.metadata.column("path").to_pylist()
    # A file that was a plain image when indexed and became a symlink to the outside afterwards.
    swapped = images / "000000000061.jpg"
    swapped.unlink()
    swapped.symlink_to(secret)
    return {"index": index_path, "images": images, "paths": paths, "secret": secret}


@pytest.fixture(scope="module")
def api(indexed):
    from kitaeru.recipes.serve import ServeConfig, load_backend

    cfg = ServeConfig(index=str(indexed["index"]))
    with running_api(lambda: load_backend(cfg, "cpu")) as client:
        yield client


def _row(indexed, name: str) -> int:
    return next(i for i, p in enumerate(indexed["paths"]) if p and p.endswith(name))


def test_health_describes_the_index(api, indexed):
    health = api.get("/health").json()
    assert health["status"] == "ok"
    assert health["backend"] == "index"
    assert health["items"] == len(indexed["paths"]) == 13
    assert health["text_queries"] is True
    assert health["model"] == MODEL and health["pretrained"] == "none" and health["dim"] == 384
    assert health["metric"] == "ip"
    assert health["data_dir"] == indexed["images"].name and health["index"] == indexed["index"].name
    assert str(indexed["images"].parent) not in str(health)  # no absolute server paths
    assert health["max_upload_bytes"] == LIMIT


def test_small_responses_are_not_held_back_by_delayed_acks(api):
    """Connections must get TCP_NODELAY: without it every response waits ~40 ms for a delayed ACK."""
    import socket

    from kitaeru.serve.server import bind_socket

    with bind_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only on such sockets
    # (the latency this buys is measured in benchmarks/, not asserted here)
    assert all(api.get("/health").status_code == 200 for _ in range(3))


def test_openapi_docs_list_every_endpoint(api):
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/health", "/text", "/image", "/vector_db", "/image/{item_id}"} <= set(paths)
    assert api.get("/", follow_redirects=False).headers["location"] == "/docs"


def test_image_query_finds_itself_first(api, indexed):
    data = (indexed["images"] / "000000000030.jpg").read_bytes()
    r = api.post("/image", files={"file": ("q.jpg", data, "image/jpeg")}, data={"top_k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["top_k"] == 3 and body["filename"] == "q.jpg" and body["took_ms"] > 0
    results = body["results"]
    assert [h["rank"] for h in results] == [1, 2, 3]
    assert results[0]["path"].endswith("000000000030.jpg")
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(a["score"] >= b["score"] for a, b in zip(results, results[1:]))
    assert results[0]["image_url"] == f"/image/{results[0]['id']}"
    assert {"width", "height", "model", "pool"} <= set(results[0])


def test_text_query_returns_default_five_with_scores(api, indexed):
    r = api.post("/text", data={"query": "a red bus in the street"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "a red bus in the street" and body["top_k"] == 5 and body["search_in"] == "index"
    assert len(body["results"]) == 5
    assert len({h["id"] for h in body["results"]}) == 5
    assert all(-1.0001 <= h["score"] <= 1.0001 for h in body["results"])
    many = api.post("/text", data={"query": "car", "top_k": "100"}).json()["results"]
    assert len(many) == len(indexed["paths"])  # k above the item count: every item once


@pytest.mark.parametrize("top_k", ["0", "101", "-3", "five"])
def test_top_k_out_of_range_is_422(api, indexed, top_k):
    assert api.post("/text", data={"query": "car", "top_k": top_k}).status_code == 422
    data = (indexed["images"] / "000000000030.jpg").read_bytes()
    assert api.post("/image", files={"file": ("q.jpg", data)}, data={"top_k": top_k}).status_code == 422


def test_bad_text_queries_are_422(api):
    assert api.post("/text", data={}).status_code == 422
    assert api.post("/text", data={"query": "   "}).status_code == 422
    assert api.post("/text", data={"query": "x" * 2001}).status_code == 422
    r = api.post("/text", data={"query": "car", "search_in": "text"})
    assert r.status_code == 422 and "index" in r.json()["detail"]


def test_bad_uploads_are_400(api, indexed):
    not_image = api.post("/image", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
    assert not_image.status_code == 400 and "not an image" in not_image.json()["detail"]
    jpeg = (indexed["images"] / "000000000030.jpg").read_bytes()
    truncated = api.post("/image", files={"file": ("cut.jpg", jpeg[: len(jpeg) // 3], "image/jpeg")})
    assert truncated.status_code == 400 and "cut.jpg" in truncated.json()["detail"]
    assert api.post("/image", files={"file": ("empty.jpg", b"", "image/jpeg")}).status_code == 400
    assert api.post("/image", data={"top_k": "3"}).status_code == 422  # no file part at all


def test_uploads_over_10_mb_are_413_and_the_server_lives_on(api, indexed):
    big = api.post("/image", files={"file": ("big.jpg", b"\xff" * (LIMIT + 1), "image/jpeg")})
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    body, headers = chunked_multipart(LIMIT + 2 * 1024 * 1024)
    streamed = api.post("/image", content=body, headers=headers)
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    assert streamed.status_code == 413
    assert _raw_post_status(api, "/image", declared_length=10**12) == 413  # refused before any body is read
    import io

    from PIL import Image

    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, format="PNG")  # tiny file, 81 megapixels
    assert len(bomb.getvalue()) < LIMIT
    r = api.post("/image", files={"file": ("bomb.png", bomb.getvalue(), "image/png")})
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    just_fits = (indexed["images"] / "000000000030.jpg").read_bytes()
    assert api.post("/image", files={"file": ("ok.jpg", just_fits)}).status_code == 200


def _raw_post_status(api, path: str, declared_length: int) -> int:
    """Status of a POST that only claims a huge body (httpx refuses to send such a lie)."""
    import socket

    host, port = api.base_url.host, api.base_url.port
    with socket.create_connection((host, port), timeout=HANG_GUARD_S) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                      f"Content-Length: {declared_length}\r\n\r\n--x\r\n").encode())
        head = sock.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])


def test_vector_db_is_404_on_an_index_server(api):
    r = api.get("/vector_db")
    assert r.status_code == 404 and "index" in r.json()["detail"]


def test_result_image_is_served_from_the_data_folder(api, indexed):
    row = _row(indexed, "000000000030.jpg")
    r = api.get(f"/image/{row}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.content == (indexed["images"] / "000000000030.jpg").read_bytes()


def test_nothing_outside_the_data_folder_is_served(api, indexed):
    secret = indexed["secret"].read_bytes()
    # an absolute path outside the folder (what a symlink's real path would be stored as)
    assert any(p == str(indexed["secret"].resolve()) for p in indexed["paths"])
    outside_rows = [i for i, p in enumerate(indexed["paths"]) if p and "outside" in p]
    assert len(outside_rows) == 3  # the absolute path and the two crafted '..' rows
    for row in outside_rows:
        r = api.get(f"/image/{row}")
        assert r.status_code == 403, (row, indexed["paths"][row])
        assert r.content != secret
    # a file that became a symlink to the outside after indexing
    assert api.get(f"/image/{_row(indexed, '000000000061.jpg')}").status_code == 403
    # a non-image file inside the folder, unknown ids, traversal in the URL itself
    assert api.get(f"/image/{_row(indexed, 'notes.txt')}").status_code == 404
    for bad in ("9999", "-1", "abc", "..%2F..%2Foutside%2Fsecret.jpg", "%2E%2E%2F%2E%2E%2Foutside%2Fsecret.jpg"):
        r = api.get(f"/image/{bad}")
        assert r.status_code == 404, bad
        assert r.content != secret
    assert api.get("/image/../../outside/secret.jpg").status_code == 404


def test_image_root_refuses_dotdot_and_symlinks(tmp_path):
    from kitaeru.serve.safe_files import ImageRoot, OutsideRootError, indexed_folder

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"y")
    (root / "link.jpg").symlink_to(tmp_path / "b.jpg")
    (root / "dirlink").symlink_to(tmp_path)
    guard = ImageRoot(root)
    assert guard.resolve("sub/a.jpg") == (root / "sub" / "a.jpg").resolve()
    assert guard.resolve("sub\\a.jpg") == (root / "sub" / "a.jpg").resolve()  # Windows separators
    for bad in ("../b.jpg", "sub/../../b.jpg", str(tmp_path / "b.jpg"), "link.jpg", "dirlink/b.jpg"):
        with pytest.raises(OutsideRootError):
            guard.resolve(bad)
    for missing in ("", "nope.jpg", "sub", "a\x00.jpg"):
        with pytest.raises(FileNotFoundError):
            guard.resolve(missing)
    with pytest.raises(FileNotFoundError):
        ImageRoot(None).resolve("sub/a.jpg")
    assert indexed_folder([str(root / "sub"), str(root)]) == root.resolve()
    assert indexed_folder(["/", None]) is None
    assert indexed_folder(["s3://bucket/images"]) is None


def test_serve_cli_refuses_bad_arguments(cli, indexed, tmp_path):
    r = cli("serve")
    assert r.exit_code == 2 and "give --output-dir" in r.stderr and "--index" in r.stderr
    r = cli("serve", "--index", str(indexed["index"]), "--output-dir", str(tmp_path))
    assert r.exit_code == 2 and "not both" in r.stderr
    r = cli("serve", "--output-dir", str(tmp_path), "--model", MODEL)
    assert r.exit_code == 2 and "--index only" in r.stderr
    r = cli("serve", "--index", str(indexed["index"]), "--port", "70000")
    assert r.exit_code == 2 and "port" in r.stderr
    r = cli("serve", "--index", str(indexed["index"]), "--device", "tpu")
    assert r.exit_code == 2 and "--device" in r.stderr


def test_serve_cli_reports_startup_errors_in_one_line(cli, indexed, tmp_path):
    import socket

    missing = cli("serve", "--index", str(tmp_path / "missing.faiss"), "--port", "0", "--device", "cpu")
    assert missing.exit_code == 2
    assert "missing" in missing.stderr and "Traceback" not in missing.stderr
    wrong_model = cli("serve", "--index", str(indexed["index"]), "--model", "timm:resnet18", "--port", "0",
                      "--device", "cpu")
    assert wrong_model.exit_code == 2 and "was built with" in wrong_model.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        taken = cli("serve", "--index", str(indexed["index"]), "--port", str(port), "--device", "cpu")
    assert taken.exit_code == 2 and "cannot listen" in taken.stderr


def test_query_vectors_match_the_indexed_space(indexed):
    """The server's encoder is the one embed used (random init is seeded on both sides)."""
    from kitaeru.serve.index_backend import IndexBackend

    backend = IndexBackend.load(indexed["index"], device="cpu")
    from kitaeru.data.images import open_image

    row = _row(indexed, "scene-0061-front.jpg")
    hits = backend.search_image(open_image(indexed["paths"][row], min_side=backend.query_image_size), 1, "index")
    assert hits[0]["id"] == row and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    stored = backend.index.reconstruct_all()[row]
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-4)
