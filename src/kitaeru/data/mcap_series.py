"""Time series from MCAP recordings: numeric fields of chosen topics on one time grid → ``(T, D)``.

ROS 2 messages (CDR) are decoded with ``mcap-ros2-support`` from the schemas embedded in the file,
JSON-encoded channels with :mod:`json`; nothing about the message types has to be known in advance.
Every numeric leaf of a message becomes one column (``/imu.linear_acceleration.x``,
``/joints.position[3]``); ``header`` sub-trees (sequence numbers, stamps) are bookkeeping and left
out, as are booleans, strings and byte blobs. Each column is linearly interpolated onto ``steps``
evenly spaced instants over the span the chosen topics share, so topics recorded at different
rates line up row by row.

A topic may be given as ``/topic`` (all its numeric fields) or ``/topic:field.prefix`` (only the
fields under that prefix, e.g. ``/BNO055_imu/quaternion:quat[0]``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from kitaeru.core.errors import DataError

DEFAULT_STEPS = 64
_SKIPPED_FIELDS = ("header",)
# Log channels carry line numbers and severity levels, not signals: left out unless asked for.
_LOG_TOPICS = ("/rosout", "/rosout_agg")


@dataclass
class McapSeries:
    """Signals resampled onto one grid: ``values`` ``(T, D)`` float32, ``columns`` (D names),
    ``times`` ``(T,)`` seconds since the first message of the recording."""

    values: np.ndarray
    columns: list[str]
    times: np.ndarray
    topics: list[str] = field(default_factory=list)


def _decoder_factories() -> list:
    from mcap.decoder import DecoderFactory
    from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory

    class JsonDecoderFactory(DecoderFactory):
        """JSON-encoded channels (Foxglove's JSON schemas, hand-written recordings)."""

        def decoder_for(self, message_encoding: str, schema) -> Callable[[bytes], Any] | None:
            if message_encoding != "json":
                return None
            return lambda data: json.loads(data.decode("utf-8"))

    return [Ros2DecoderFactory(), JsonDecoderFactory()]


def _open(source: str | os.PathLike):
    from kitaeru.core.storage import open_input

    return open_input(source, "rb")


def _reader(stream, label: str):
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    try:
        return make_reader(stream, decoder_factories=_decoder_factories())
    except (McapError, ValueError, EOFError) as exc:
        raise DataError(f"{label}: not a readable MCAP file ({type(exc).__name__}: {exc})") from exc


def list_topics(source: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{topic: {"schema", "encoding", "messages"}}`` from the recording's summary."""
    label = str(source)
    with _open(source) as fh:
        summary = _summary(_reader(fh, label), label)
    counts = summary.statistics.channel_message_counts if summary.statistics else {}
    out = {}
    for cid, channel in summary.channels.items():
        schema = summary.schemas.get(channel.schema_id)
        out[channel.topic] = {
            "schema": schema.name if schema else "",
            "encoding": channel.message_encoding,
            "messages": int(counts.get(cid, 0)),
        }
    return out


def _summary(reader, label: str):
    from mcap.exceptions import McapError

    try:
        summary = reader.get_summary()
    except (McapError, ValueError, EOFError, OSError) as exc:
        raise DataError(f"{label}: not a readable MCAP file ({type(exc).__name__}: {exc})") from exc
    if summary is None:
        raise DataError(f"{label}: MCAP file has no summary section (re-record or run 'mcap recover')")
    return summary


def _parse_selector(selector: str) -> tuple[str, str]:
    topic, _, prefix = selector.partition(":")
    return topic.strip(), prefix.strip()


def flatten_numeric(value: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a decoded message as ``{"a.b[2].c": value}`` (header, bools, text skipped)."""
    out: dict[str, float] = {}
    _flatten(value, prefix, out)
    return out


def _flatten(value: Any, prefix: str, out: dict[str, float]) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes, bytearray)):
        return
    if isinstance(value, (int, float, np.integer, np.floating)):
        out[prefix] = float(value)
        return
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iuf":
            for i, v in enumerate(value.reshape(-1)):
                out[f"{prefix}[{i}]"] = float(v)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{i}]", out)
        return
    if isinstance(value, dict):
        items = value.items()
    else:
        names = getattr(type(value), "__slots__", None) or list(getattr(value, "__dict__", {}))
        items = ((n, getattr(value, n, None)) for n in names)
    for name, item in items:
        if name in _SKIPPED_FIELDS or str(name).startswith("_"):
            continue
        _flatten(item, f"{prefix}.{name}" if prefix else str(name), out)


def read_mcap_series(
    source: str | os.PathLike,
    topics: Sequence[str] | None = None,
    *,
    steps: int = DEFAULT_STEPS,
) -> McapSeries:
    """Numeric fields of ``topics`` (all topics with numeric fields when empty) on ``steps`` instants.

    A requested topic that the recording lacks, or one without numeric fields, is a
    :class:`DataError` naming the file and the topics it does have.
    """
    if steps < 2:
        raise DataError(f"{source}: time-series steps must be at least 2 (got {steps})")
    label = str(source)
    selectors = [_parse_selector(s) for s in (topics or []) if s.strip()]
    with _open(source) as fh:
        reader = _reader(fh, label)
        summary = _summary(reader, label)
        available = sorted({c.topic for c in summary.channels.values()})
        for topic, _ in selectors:
            if topic not in available:
                raise DataError(f"{label}: topic '{topic}' not in the recording (topics: {', '.join(available)})")
        wanted = sorted({t for t, _ in selectors}) if selectors else [t for t in available if t not in _LOG_TOPICS]
        start_ns = summary.statistics.message_start_time if summary.statistics else None
        samples = _collect(reader, wanted, label)
    if start_ns is None:
        start_ns = min((t for rows in samples.values() for t, _ in rows[:1]), default=0)
    columns: list[str] = []
    tracks: list[tuple[np.ndarray, np.ndarray]] = []
    used_topics: list[str] = []
    for topic in wanted:
        prefixes = [p for t, p in selectors if t == topic] or [""]
        rows = samples.get(topic, [])
        names = _column_names(rows, prefixes)
        if not names:
            if selectors:
                what = f"fields under '{prefixes[0]}'" if prefixes != [""] else "numeric fields"
                raise DataError(f"{label}: topic '{topic}' has no {what}")
            continue  # with no explicit choice, topics without numbers (logs, strings) are ignored
        times = np.array([(t - start_ns) / 1e9 for t, _ in rows], dtype=np.float64)
        matrix = np.array([[r.get(n, np.nan) for n in names] for _, r in rows], dtype=np.float64)
        columns.extend(f"{topic}.{n}" for n in names)
        tracks.append((times, matrix))
        used_topics.append(topic)
    if not tracks:
        raise DataError(f"{label}: no topic with numeric fields (topics: {', '.join(available)})")
    grid = _common_grid([t for t, _ in tracks], steps)
    values = np.concatenate([_resample(t, m, grid) for t, m in tracks], axis=1).astype(np.float32)
    return McapSeries(values=values, columns=columns, times=grid.astype(np.float32), topics=used_topics)


def _collect(reader, topics: Iterable[str], label: str) -> dict[str, list[tuple[int, dict[str, float]]]]:
    from mcap.exceptions import McapError

    samples: dict[str, list[tuple[int, dict[str, float]]]] = {t: [] for t in topics}
    try:
        for _, channel, message, decoded in reader.iter_decoded_messages(topics=list(samples)):
            samples[channel.topic].append((message.log_time, flatten_numeric(decoded)))
    except McapError as exc:
        raise DataError(f"{label}: cannot decode messages ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # noqa: BLE001 - decoder errors (missing decoder, bad CDR) come in many types
        raise DataError(f"{label}: cannot decode messages ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from exc
    return samples


def _column_names(rows: list[tuple[int, dict[str, float]]], prefixes: list[str]) -> list[str]:
    names: dict[str, None] = {}
    for _, row in rows:
        for name in row:
            if any(_under(name, p) for p in prefixes):
                names.setdefault(name)
    return list(names)


def _under(name: str, prefix: str) -> bool:
    return not prefix or name == prefix or name.startswith(prefix + ".") or name.startswith(prefix + "[")


def _common_grid(all_times: list[np.ndarray], steps: int) -> np.ndarray:
    """Evenly spaced instants over the span all topics cover (their union when they do not overlap)."""
    starts = [t.min() for t in all_times if len(t)]
    ends = [t.max() for t in all_times if len(t)]
    lo, hi = max(starts), min(ends)
    if hi <= lo:
        lo, hi = min(starts), max(ends)
    return np.linspace(lo, hi, steps)


def _resample(times: np.ndarray, matrix: np.ndarray, grid: np.ndarray) -> np.ndarray:
    order = np.argsort(times, kind="stable")
    times, matrix = times[order], matrix[order]
    out = np.zeros((len(grid), matrix.shape[1]), dtype=np.float64)
    for j in range(matrix.shape[1]):
        column = matrix[:, j]
        ok = np.isfinite(column)
        if ok.any():
            out[:, j] = np.interp(grid, times[ok], column[ok])  # holds the edge values outside the span
    return out
