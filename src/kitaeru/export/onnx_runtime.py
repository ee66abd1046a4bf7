"""The onnxruntime side of an ONNX check: load a file, run it, compare with reference outputs.

:func:`onnxruntime_max_abs_diff` is the reusable parity check for files exported by any tool (e.g.
Ultralytics). Nothing here imports torch, so onnxruntime-only code paths (classification from an
ONNX file) never load PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kitaeru.core.errors import DataError, KitaeruError


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
