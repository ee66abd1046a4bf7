"""The ``onnx:`` section of a config as a schema, and the report an export writes beside its file.

:class:`OnnxSpec` holds the fields of the document classifier guide's ``onnx:`` section (name, input
shapes and dtypes, input/output names, dynamic axes, exporter options); :func:`random_inputs` makes
inputs of its shapes. NumPy and Pydantic only: a config that names an ``onnx:`` section is validated
without loading PyTorch or onnxruntime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kitaeru.core.errors import ConfigError

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
