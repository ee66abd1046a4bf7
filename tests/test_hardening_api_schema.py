"""The search API matches its own OpenAPI schema: schemathesis against ``/openapi.json`` of a real
server over a small real index (fixed examples per operation, no stateful phase, bounded), with zero
server errors and zero contract mismatches; every error body is ``{"detail": "<one line>"}``."""

from __future__ import annotations

import shutil

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

from serve_helpers import running_api  # noqa: E402

MODEL = "open_clip:ViT-S-32"


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    """A real server over an index of 4 COCO images (random-init ViT-S-32)."""
    from kitaeru.cli import run
    from kitaeru.serve.index_backend import IndexBackend

    root = tmp_path_factory.mktemp("schema")
    images = root / "images"
    images.mkdir()
    for f in sorted((shared_data / "coco8" / "images").rglob("*.jpg"))[:4]:
        shutil.copy(f, images / f.name)
    emb, index = root / "e.parquet", root / "x.faiss"
    assert run(["embed", "--model", MODEL, "--pretrained", "none", "--image-dir", str(images), "--out", str(emb),
                "--batch-size", "4", "--device", "cpu"]) == 0
    assert run(["index", "build", "--embeddings", str(emb), "--index-out", str(index), "--type", "flat"]) == 0
    with running_api(lambda: IndexBackend.load(index, device="cpu")) as client:
        yield client


@pytest.mark.slow
def test_api_matches_its_schema(served):
    """Every operation: a few generated requests (explicit + generate phases only), each response
    checked against the schema by schemathesis' own checks."""
    from hypothesis import given
    from schemathesis.checks import positive_data_acceptance

    api = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/health", "/text", "/image", "/vector_db", "/image/{item_id}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            # an upload's bytes being an image is not expressible in OpenAPI: random bytes to /image
            # are schema-valid yet rightly refused (400), so that one check is left out there
            excluded = [positive_data_acceptance] if case.operation.path == "/image" else []
            response = case.call_and_validate(excluded_checks=excluded)
            assert response.status_code < 500
            if response.status_code >= 400:
                body = response.json()
                assert set(body) == {"detail"} and isinstance(body["detail"], str) and "\n" not in body["detail"]

        check()


def test_error_bodies_have_one_shape(served):
    for response in (served.post("/text", data={"query": "a", "top_k": "0"}),   # validation error
                     served.post("/text", data={}),                                # missing field
                     served.get("/image/nope"),                                    # not found
                     served.post("/image", files={"file": ("a.png", b"not an image", "image/png")})):
        assert 400 <= response.status_code < 500
        body = response.json()
        assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    health = served.get("/health").json()
    assert not any(isinstance(v, str) and v.startswith("/") for v in health.values()), health


@pytest.mark.slow
def test_api_refuses_what_its_schema_excludes(served):
    """Negative cases (values the schema excludes: an empty ``search_in``, a ``top_k`` of 0, a missing
    upload...) are refused with a 4xx, checked by schemathesis' own negative-data check."""
    from hypothesis import given
    from schemathesis.checks import negative_data_rejection
    from schemathesis.generation import GenerationMode

    api = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    operations = [r.ok() for r in api.get_all_operations() if r.ok().path in ("/text", "/image")]
    assert len(operations) == 2
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(max_examples=15, deadline=None, phases=[Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(checks=[negative_data_rejection])

        check()
    assert served.post("/text", data={"query": "a", "search_in": ""}).status_code == 422
