"""Generic ONNX export (kitaeru.export.onnx): spec validation, export + checks, parity helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kitaeru.core.errors import ConfigError, DataError, KitaeruError
from kitaeru.export.onnx import (
    OnnxSpec,
    export_onnx,
    graph_signature,
    onnxruntime_max_abs_diff,
    parse_onnx_spec,
    random_inputs,
)

SEED_SPEC = {
    "name": "WarpFeatureLearning",
    "input_shape": {"img": {"shape": [1, 3, 32, 32], "dtype": "float32"}},
    "input_names": ["img"],
    "output_names": ["feats"],
    "dynamic_axes": {"img": {"0": "batch_size"}, "feats": {"0": "batch_size"}},
    "options": {"opset_version": 16, "verbose": False, "do_constant_folding": True},
}


class TwoHeads(torch.nn.Module):
    """A small two-output module (feature + logits) to exercise several outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, img: torch.Tensor):
        feats = self.conv(img).mean(dim=(2, 3))
        return torch.nn.functional.normalize(feats, dim=1), self.fc(feats)


def test_spec_parses_the_seed_section_with_string_axis_keys():
    spec = parse_onnx_spec(SEED_SPEC)
    assert spec.dynamic_axes == {"img": {0: "batch_size"}, "feats": {0: "batch_size"}}
    assert spec.options.opset_version == 16 and spec.batch_is_dynamic("img")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dynamic_axes": {"img": {"0": "b"}, "output": {"0": "b"}}}, "'output' is neither an input nor an output"),
        ({"input_names": ["image"]}, "differ from input_names"),
        ({"input_shape": {"img": {"shape": [1, 3, 0, 32]}}}, "positive integer"),
        ({"input_shape": {"img": {"shape": [1, 3, 32, 32], "dtype": "float8"}}}, "unknown dtype"),
        ({"dynamic_axes": {"img": {"7": "b"}}}, "out of range"),
        ({"options": {"opset_version": 16, "colour": "red"}}, "options.colour: unknown key"),
    ],
)
def test_spec_errors_name_the_problem(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_onnx_spec({**SEED_SPEC, **change})


def test_export_matches_spec_and_pytorch(tmp_path):
    torch.manual_seed(0)
    module = TwoHeads()
    spec = {**SEED_SPEC, "output_names": ["feats", "logits"], "dynamic_axes": {"img": {0: "n"}, "feats": {0: "n"}, "logits": {0: "n"}}}
    real = {"img": np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)}
    report = export_onnx(module, spec, tmp_path / "m.onnx", real_inputs=real)

    import onnx

    model = onnx.load(str(tmp_path / "m.onnx"))
    assert model.graph.name == "WarpFeatureLearning"
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [16]
    inputs, outputs = graph_signature(tmp_path / "m.onnx")
    assert inputs == {"img": ["n", 3, 32, 32]}
    assert outputs == {"feats": ["n", 8], "logits": ["n", 5]}
    assert report.checker == "passed" and report.real_inputs_checked == 3
    assert report.max_abs_diff <= 1e-4
    # Independent parity check through the public helper, with a batch size never exported.
    batch = random_inputs(parse_onnx_spec(spec), batch=4, seed=9)
    with torch.inference_mode():
        ref = [t.numpy() for t in module(torch.from_numpy(batch["img"]))]
    assert onnxruntime_max_abs_diff(tmp_path / "m.onnx", batch, ref) <= 1e-4
    # A wrong reference is detected, not averaged away.
    assert onnxruntime_max_abs_diff(tmp_path / "m.onnx", batch, [ref[0] + 0.5, ref[1]]) == pytest.approx(0.5, abs=1e-4)


def test_fixed_batch_export_checks_real_inputs_one_batch_at_a_time(tmp_path):
    module = TwoHeads().eval()
    spec = {**SEED_SPEC, "output_names": ["feats", "logits"], "dynamic_axes": {}}
    report = export_onnx(module, spec, tmp_path / "fixed.onnx", real_inputs={"img": np.zeros((2, 3, 32, 32), np.float32)})
    inputs, _ = graph_signature(tmp_path / "fixed.onnx")
    assert inputs == {"img": [1, 3, 32, 32]}
    assert report.real_inputs_checked == 2


def test_shape_the_model_rejects_is_a_config_error_and_writes_nothing(tmp_path):
    spec = {**SEED_SPEC, "input_shape": {"img": {"shape": [1, 1, 32, 32], "dtype": "float32"}}}
    with pytest.raises(ConfigError, match=r"onnx.input_shape: the model rejects img \[1, 1, 32, 32\]"):
        export_onnx(TwoHeads(), spec, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
    assert list(tmp_path.iterdir()) == []


def test_output_names_must_match_the_outputs(tmp_path):
    with pytest.raises(ConfigError, match="1 name"):
        export_onnx(TwoHeads(), SEED_SPEC, tmp_path / "m.onnx")


def test_parity_helper_errors(tmp_path):
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    export_onnx(module, SEED_SPEC, tmp_path / "lin.onnx")
    good = {"img": np.zeros((2, 3, 32, 32), np.float32)}
    with pytest.raises(KitaeruError, match="output 0 has shape"):
        onnxruntime_max_abs_diff(tmp_path / "lin.onnx", good, [np.zeros((2, 5), np.float32)])
    with pytest.raises(KitaeruError, match="do not match the graph's inputs"):
        onnxruntime_max_abs_diff(tmp_path / "lin.onnx", {"x": good["img"]}, [np.zeros((2, 4))])
    with pytest.raises(DataError, match="not found"):
        onnxruntime_max_abs_diff(tmp_path / "missing.onnx", good, [np.zeros((2, 4))])
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DataError, match="cannot load ONNX model"):
        onnxruntime_max_abs_diff(tmp_path / "junk.onnx", good, [np.zeros((2, 4))])


def test_spec_object_is_accepted_as_is():
    spec = OnnxSpec.model_validate(SEED_SPEC)
    assert parse_onnx_spec(spec) is spec
