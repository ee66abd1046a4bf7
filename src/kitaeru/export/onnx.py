"""Generic ONNX export of a PyTorch module from an ``onnx:`` spec, with checks that it is right.

Any recipe hands :func:`export_onnx` a module (its inference branch only) and an :class:`OnnxSpec`
(the fields of the document classifier guide's ``onnx:`` section: name, input shapes and dtypes, input/output names,
dynamic axes, exporter options). The file is written only when every check passes:

1. the module accepts the spec's input shapes (a shape it rejects is a one-line ``ConfigError``);
2. ``onnx.checker`` accepts the graph, and its input/output names, fixed dimensions and dynamic
   axes are the ones the spec asked for;
3. onnxruntime and PyTorch agree (max abs difference ≤ ``tolerance``) on random inputs (with batch
   2 when the batch axis is dynamic, so the dynamic axis is exercised) and on real inputs if given.

:func:`onnxruntime_max_abs_diff` is the reusable parity check for files exported by other tools
(e.g. Ultralytics). This module imports torch/onnx/onnxruntime only inside functions, so that
onnxruntime-only code paths (classification from an ONNX file) never load PyTorch.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kitaeru.core.errors import ConfigError, DataError, KitaeruError

# dtypes an ``onnx:`` spec may name, with the NumPy type used for inputs of that type.
ONNX_DTYPES: dict[str, type] = {
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
    "uint8": np.uint8,
    "bool": np.bool_,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OnnxInputSpec(_Strict):
    """Shape and dtype of one graph input; the shape is also the shape of the export's example input."""

    shape: list[int] = Field(description="Example input shape, e.g. [1, 3, 96, 96]; axes named in dynamic_axes stay free.")
    dtype: str = Field("float32", description=f"Element type: {', '.join(ONNX_DTYPES)}.")

    @field_validator("shape")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(int(d) < 1 for d in value):
            raise ValueError(f"every dimension must be a positive integer, got {value}")
        return value

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in ONNX_DTYPES:
            raise ValueError(f"unknown dtype '{value}' (choose from {', '.join(ONNX_DTYPES)})")
        return value


class OnnxOptions(_Strict):
    """Options handed to ``torch.onnx.export``."""

    opset_version: int = Field(16, ge=7, description="ONNX opset version of the exported graph.")
    verbose: bool = Field(False, description="Print the exporter's graph description.")
    do_constant_folding: bool = Field(True, description="Fold constant sub-graphs at export time.")


class OnnxSpec(_Strict):
    """The ``onnx:`` section of a config: what the exported graph must look like."""

    name: str = Field(description="Name of the exported graph (the inference-branch module, e.g. WarpFeatureLearning).")
    input_shape: dict[str, OnnxInputSpec] = Field(description="Per input name: its example shape and dtype.")
    input_names: list[str] = Field(description="Graph input names, in the order of the module's forward() arguments.")
    output_names: list[str] = Field(description="Graph output names, in the order the module returns them.")
    dynamic_axes: dict[str, dict[int, str]] = Field(
        default_factory=dict,
        description="Per input/output name: {axis index: symbolic name}, e.g. {img: {0: batch_size}}.",
    )
    options: OnnxOptions = Field(default_factory=OnnxOptions, description="Exporter options.")

    @model_validator(mode="after")
    def _consistent(self) -> "OnnxSpec":
        if not self.input_names or not self.output_names:
            raise ValueError("input_names and output_names must not be empty")
        if set(self.input_names) != set(self.input_shape):
            raise ValueError(
                f"input_shape names {sorted(self.input_shape)} differ from input_names {self.input_names}"
            )
        known = [*self.input_names, *self.output_names]
        for key, axes in self.dynamic_axes.items():
            if key not in known:
                raise ValueError(f"dynamic_axes key '{key}' is neither an input nor an output name ({', '.join(known)})")
            rank = len(self.input_shape[key].shape) if key in self.input_shape else None
            for axis in axes:
                if axis < 0 or (rank is not None and axis >= rank):
                    raise ValueError(f"dynamic_axes.{key}: axis {axis} is out of range for a rank-{rank} input")
        return self

    def batch_is_dynamic(self, name: str) -> bool:
        return 0 in self.dynamic_axes.get(name, {})


def parse_onnx_spec(data: Mapping[str, Any] | OnnxSpec, source: str = "onnx") -> OnnxSpec:
    """An :class:`OnnxSpec` from a mapping (e.g. a YAML section), with a one-line error naming ``source``."""
    if isinstance(data, OnnxSpec):
        return data
    from pydantic import ValidationError

    from kitaeru.core.config import format_validation_error

    try:
        return OnnxSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


@dataclass
class OnnxExportReport:
    """What was exported and how well it matches PyTorch (written beside the file as evidence)."""

    path: str
    name: str
    opset_version: int
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    dynamic_axes: dict[str, dict[int, str]]
    checker: str
    tolerance: float
    max_abs_diff_random: float
    max_abs_diff_real: float | None
    real_inputs_checked: int
    seconds: float

    @property
    def max_abs_diff(self) -> float:
        diffs = [self.max_abs_diff_random] + ([self.max_abs_diff_real] if self.max_abs_diff_real is not None else [])
        return max(diffs)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["max_abs_diff"] = self.max_abs_diff
        out["dynamic_axes"] = {k: {str(a): n for a, n in v.items()} for k, v in self.dynamic_axes.items()}
        return out


# ---- onnxruntime side (no torch) -------------------------------------------------------------


def onnxruntime_session(onnx_path: str | os.PathLike, providers: Sequence[str] | None = None):
    """An onnxruntime ``InferenceSession`` (CPU unless ``providers`` say otherwise), one-line errors."""
    import onnxruntime as ort

    path = Path(onnx_path)
    if not path.is_file():
        raise DataError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep onnxruntime's warnings out of the user's terminal
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot load ONNX model ({first})") from exc


def onnxruntime_run(session, inputs: Mapping[str, np.ndarray], source: str = "onnx model") -> list[np.ndarray]:
    """Run ``session`` on named inputs; a missing/extra name or a rejected shape is a one-line error."""
    expected = [i.name for i in session.get_inputs()]
    missing = [n for n in expected if n not in inputs]
    extra = [n for n in inputs if n not in expected]
    if missing or extra:
        raise KitaeruError(f"{source}: inputs {sorted(inputs)} do not match the graph's inputs {expected}")
    try:
        return [np.asarray(o) for o in session.run(None, {k: np.ascontiguousarray(v) for k, v in inputs.items()})]
    except Exception as exc:  # noqa: BLE001
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KitaeruError(f"{source}: onnxruntime rejected the inputs ({first})") from exc


def onnxruntime_max_abs_diff(
    onnx_path: str | os.PathLike,
    inputs: dict[str, np.ndarray],
    reference_outputs: list[np.ndarray],
) -> float:
    """Largest absolute difference between onnxruntime's outputs on ``inputs`` and ``reference_outputs``.

    Outputs are compared in graph order; a different number of outputs or a different shape is a
    :class:`KitaeruError` (a parity check that silently broadcasts would prove nothing).
    """
    session = onnxruntime_session(onnx_path)
    outputs = onnxruntime_run(session, inputs, str(onnx_path))
    if len(outputs) != len(reference_outputs):
        raise KitaeruError(f"{onnx_path}: graph has {len(outputs)} output(s), reference has {len(reference_outputs)}")
    worst = 0.0
    for index, (got, ref) in enumerate(zip(outputs, reference_outputs)):
        ref = np.asarray(ref)
        if got.shape != ref.shape:
            raise KitaeruError(f"{onnx_path}: output {index} has shape {list(got.shape)}, reference {list(ref.shape)}")
        if got.size:
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))))
    return worst


def graph_signature(onnx_path: str | os.PathLike) -> tuple[dict[str, list[int | str]], dict[str, list[int | str]]]:
    """Input and output names of an ONNX file with their dims (an int, or the symbolic name of a free axis)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)

    def dims(value_info) -> list[int | str]:
        shape = value_info.type.tensor_type.shape
        return [d.dim_param if d.dim_param else int(d.dim_value) for d in shape.dim]

    initializers = {i.name for i in model.graph.initializer}
    inputs = {v.name: dims(v) for v in model.graph.input if v.name not in initializers}
    outputs = {v.name: dims(v) for v in model.graph.output}
    return inputs, outputs


# ---- PyTorch side ----------------------------------------------------------------------------


def random_inputs(spec: OnnxSpec, *, batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the spec's shapes and dtypes (batch axis replaced by ``batch`` when it is dynamic)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in spec.input_names:
        info = spec.input_shape[name]
        shape = list(info.shape)
        if batch is not None and spec.batch_is_dynamic(name):
            shape[0] = batch
        dtype = ONNX_DTYPES[info.dtype]
        if np.issubdtype(dtype, np.floating):
            out[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            out[name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            out[name] = rng.integers(0, 10, size=shape).astype(dtype)
    return out


def _torch_outputs(module, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    import torch

    tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names]
    with torch.inference_mode():
        result = module(*tensors)
    if isinstance(result, torch.Tensor):
        result = (result,)
    elif isinstance(result, Mapping):
        result = tuple(result.values())
    return [r.detach().float().cpu().numpy() if r.is_floating_point() else r.detach().cpu().numpy() for r in result]


def export_onnx(
    module,
    spec: OnnxSpec | Mapping[str, Any],
    out_path: str | os.PathLike,
    *,
    real_inputs: Mapping[str, np.ndarray] | None = None,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> OnnxExportReport:
    """Export ``module`` (eval mode, CPU copy) as ``spec`` says to ``out_path`` and verify it.

    ``real_inputs`` (name → array whose first axis is the batch) are compared too. Raises
    :class:`ConfigError` when the module rejects the spec's shapes and :class:`KitaeruError` when a
    check fails; in both cases nothing is written at ``out_path``.
    """
    import copy
    import warnings

    import onnx
    import torch

    from kitaeru.core.storage import atomic_path

    spec = parse_onnx_spec(spec)
    started = time.time()
    model = copy.deepcopy(module).to("cpu").float().eval()
    example = random_inputs(spec, seed=seed)

    try:
        torch_example = _torch_outputs(model, example, spec.input_names)
    except Exception as exc:  # noqa: BLE001 - any failure here means the shapes do not fit the model
        shapes = ", ".join(f"{n} {spec.input_shape[n].shape}" for n in spec.input_names)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"onnx.input_shape: the model rejects {shapes} ({type(exc).__name__}: {first[:200]})") from exc
    if len(torch_example) != len(spec.output_names):
        raise ConfigError(
            f"onnx.output_names: {len(spec.output_names)} name(s) {spec.output_names} for a model with {len(torch_example)} output(s)"
        )

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        args = tuple(torch.from_numpy(example[n]) for n in spec.input_names)
        with warnings.catch_warnings():
            # The TorchScript exporter is the one that honours low opsets such as the seed's 16
            # exactly; its deprecation notice is not something the user can act on.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(tmp),
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()} or None,
                opset_version=spec.options.opset_version,
                verbose=spec.options.verbose,
                do_constant_folding=spec.options.do_constant_folding,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        proto.graph.name = spec.name
        _fix_output_dims(proto, spec, torch_example)
        onnx.save(proto, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise KitaeruError(f"{out_path}: onnx.checker rejected the export ({str(exc).splitlines()[0]})") from exc

        inputs_sig, outputs_sig = graph_signature(tmp)
        _check_signature(spec, inputs_sig, outputs_sig, out_path)

        # Batch 2 on a dynamic axis proves the axis is really free, not just named.
        probe = random_inputs(spec, batch=2, seed=seed + 1)
        diff_random = max(
            onnxruntime_max_abs_diff(tmp, example, torch_example),
            onnxruntime_max_abs_diff(tmp, probe, _torch_outputs(model, probe, spec.input_names)),
        )
        diff_real: float | None = None
        checked = 0
        if real_inputs:
            diff_real = 0.0
            for chunk in _chunks_for(spec, real_inputs):
                diff_real = max(diff_real, onnxruntime_max_abs_diff(tmp, chunk, _torch_outputs(model, chunk, spec.input_names)))
                checked += len(next(iter(chunk.values())))
        worst = max(diff_random, diff_real or 0.0)
        if not np.isfinite(worst) or worst > tolerance:
            raise KitaeruError(
                f"{out_path}: onnxruntime and PyTorch outputs differ by {worst:.3g} (> tolerance {tolerance:g}); file not written"
            )
    return OnnxExportReport(
        path=str(out_path),
        name=spec.name,
        opset_version=spec.options.opset_version,
        inputs=inputs_sig,
        outputs=outputs_sig,
        dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()},
        checker="passed",
        tolerance=tolerance,
        max_abs_diff_random=diff_random,
        max_abs_diff_real=diff_real,
        real_inputs_checked=checked,
        seconds=round(time.time() - started, 3),
    )


def _fix_output_dims(proto, spec: OnnxSpec, reference: Sequence[np.ndarray]) -> None:
    """Write PyTorch's concrete sizes into output axes that are not dynamic.

    The exporter leaves some of them symbolic (e.g. after a division), which tells a consumer
    nothing; the spec's dynamic axes stay named.
    """
    for output, ref in zip(proto.graph.output, reference):
        dims = output.type.tensor_type.shape.dim
        if len(dims) != ref.ndim:
            continue
        free = spec.dynamic_axes.get(output.name, {})
        for axis, dim in enumerate(dims):
            if axis in free:
                dim.dim_param = free[axis]
            else:
                dim.dim_value = int(ref.shape[axis])


def _chunks_for(spec: OnnxSpec, real_inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Real inputs as runnable batches: whole when every batch axis is dynamic, else one fixed-size batch at a time."""
    arrays = {n: np.asarray(real_inputs[n], dtype=ONNX_DTYPES[spec.input_shape[n].dtype]) for n in spec.input_names if n in real_inputs}
    missing = [n for n in spec.input_names if n not in arrays]
    if missing:
        raise KitaeruError(f"real inputs for the ONNX check lack {missing}")
    if all(spec.batch_is_dynamic(n) for n in spec.input_names):
        return [arrays]
    step = spec.input_shape[spec.input_names[0]].shape[0]
    total = len(next(iter(arrays.values())))
    return [{n: a[i : i + step] for n, a in arrays.items()} for i in range(0, total - step + 1, step)]


def _check_signature(
    spec: OnnxSpec,
    inputs: Mapping[str, list[int | str]],
    outputs: Mapping[str, list[int | str]],
    path: Path,
) -> None:
    """The exported graph has exactly the spec's names, fixed dims and free (dynamic) axes."""
    if list(inputs) != list(spec.input_names):
        raise KitaeruError(f"{path}: graph inputs {list(inputs)} differ from onnx.input_names {spec.input_names}")
    if list(outputs) != list(spec.output_names):
        raise KitaeruError(f"{path}: graph outputs {list(outputs)} differ from onnx.output_names {spec.output_names}")
    for name, dims in inputs.items():
        wanted: list[int | str] = list(spec.input_shape[name].shape)
        for axis, symbol in spec.dynamic_axes.get(name, {}).items():
            wanted[axis] = symbol
        if dims != wanted:
            raise KitaeruError(f"{path}: input {name} has dims {dims}, the spec asks for {wanted}")
    for name, dims in outputs.items():
        if any(isinstance(d, str) and d and d not in spec.dynamic_axes.get(name, {}).values() for d in dims):
            raise KitaeruError(f"{path}: output {name} has dims {dims}; only the spec's dynamic axes may be free")
        for axis, symbol in spec.dynamic_axes.get(name, {}).items():
            if axis >= len(dims) or dims[axis] != symbol:
                raise KitaeruError(f"{path}: output {name} axis {axis} is {dims[axis] if axis < len(dims) else 'missing'}, not dynamic '{symbol}'")
