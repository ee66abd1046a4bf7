"""Generic ONNX export of a PyTorch module from an ``onnx:`` spec, with checks that it is right.

Any recipe hands :func:`export_onnx` a module (its inference branch only) and an :class:`OnnxSpec`
(:mod:`.onnx_spec`). The file is written only when every check passes:

1. the module accepts the spec's input shapes (a shape it rejects is a one-line ``ConfigError``);
2. ``onnx.checker`` accepts the graph, and its input/output names, fixed dimensions and dynamic
   axes are the ones the spec asked for;
3. onnxruntime and PyTorch agree (max abs difference ≤ ``tolerance``) on random inputs (with batch
   2 when the batch axis is dynamic, so the dynamic axis is exercised) and on real inputs if given.

The spec and the onnxruntime side (:mod:`.onnx_runtime`, the reusable parity check for files
exported by other tools) are importable from here too. This module imports torch/onnx only inside
functions, so that onnxruntime-only code paths never load PyTorch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kitaeru.core.errors import ConfigError, KitaeruError
from kitaeru.export.onnx_runtime import (
    graph_signature,
    onnxruntime_max_abs_diff,
    onnxruntime_run,
    onnxruntime_session,
)
from kitaeru.export.onnx_spec import (
    ONNX_DTYPES,
    OnnxExportReport,
    OnnxInputSpec,
    OnnxOptions,
    OnnxSpec,
    parse_onnx_spec,
    random_inputs,
)

__all__ = [
    "ONNX_DTYPES",
    "OnnxExportReport",
    "OnnxInputSpec",
    "OnnxOptions",
    "OnnxSpec",
    "export_onnx",
    "graph_signature",
    "onnxruntime_max_abs_diff",
    "onnxruntime_run",
    "onnxruntime_session",
    "parse_onnx_spec",
    "random_inputs",
]


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

    from kitaeru.core.storage import atomic_path

    spec = parse_onnx_spec(spec)
    started = time.time()
    model = copy.deepcopy(module).to("cpu").float().eval()
    example = random_inputs(spec, seed=seed)
    torch_example = _reference_outputs(model, example, spec)

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        _write_graph(model, example, spec, torch_example, tmp, out_path)
        inputs_sig, outputs_sig = graph_signature(tmp)
        _check_signature(spec, inputs_sig, outputs_sig, out_path)
        diff_random, diff_real, checked = _parity(model, spec, tmp, example, torch_example, real_inputs, seed)
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


def _reference_outputs(model, example: Mapping[str, np.ndarray], spec: OnnxSpec) -> list[np.ndarray]:
    """PyTorch's outputs on the spec's example; a model that rejects the shapes is a one-line ConfigError."""
    try:
        outputs = _torch_outputs(model, example, spec.input_names)
    except Exception as exc:  # noqa: BLE001 - any failure here means the shapes do not fit the model
        shapes = ", ".join(f"{n} {spec.input_shape[n].shape}" for n in spec.input_names)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"onnx.input_shape: the model rejects {shapes} ({type(exc).__name__}: {first[:200]})") from exc
    if len(outputs) != len(spec.output_names):
        raise ConfigError(
            f"onnx.output_names: {len(spec.output_names)} name(s) {spec.output_names} for a model with {len(outputs)} output(s)"
        )
    return outputs


def _write_graph(model, example: Mapping[str, np.ndarray], spec: OnnxSpec, reference: Sequence[np.ndarray],
                 tmp: Path, out_path: Path) -> None:
    """Export to ``tmp``, name the graph, fix its output dims and pass ``onnx.checker``."""
    import warnings

    import onnx
    import torch

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
    _fix_output_dims(proto, spec, reference)
    onnx.save(proto, str(tmp))
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise KitaeruError(f"{out_path}: onnx.checker rejected the export ({str(exc).splitlines()[0]})") from exc


def _parity(model, spec: OnnxSpec, tmp: Path, example: Mapping[str, np.ndarray], reference: list[np.ndarray],
            real_inputs: Mapping[str, np.ndarray] | None, seed: int) -> tuple[float, float | None, int]:
    """Largest onnxruntime-vs-PyTorch difference on random inputs and on real ones (None when none
    were given), and how many real samples were checked."""
    # Batch 2 on a dynamic axis proves the axis is really free, not just named.
    probe = random_inputs(spec, batch=2, seed=seed + 1)
    diff_random = max(
        onnxruntime_max_abs_diff(tmp, dict(example), reference),
        onnxruntime_max_abs_diff(tmp, probe, _torch_outputs(model, probe, spec.input_names)),
    )
    if not real_inputs:
        return diff_random, None, 0
    diff_real, checked = 0.0, 0
    for chunk in _chunks_for(spec, real_inputs):
        diff_real = max(diff_real, onnxruntime_max_abs_diff(tmp, chunk, _torch_outputs(model, chunk, spec.input_names)))
        checked += len(next(iter(chunk.values())))
    return diff_random, diff_real, checked


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
