"""``kitaeru detect train``: build data → plan resources → fit on Ultralytics → evaluate → save.

* **data**: the ``data.yaml`` is checked (structure, folders, every label file), copy-paste
  synthetic images are added when both folders are given, and a resolved copy is written into the
  run folder for Ultralytics;
* **plan**: tier table / free memory / explicit values (:mod:`.plan`), printed and recorded;
* **fit**: Ultralytics' trainer with kitaeru's callbacks, inside the OOM ladder (:mod:`.session`);
* **evaluate / save**: Ultralytics validates ``best.pt``; ``training_result.json`` holds the
  metrics, the real epoch count, the plan, every OOM step; ``--export onnx`` exports and checks.

The run folder is ``<output-dir>/train`` (``train2``, ``train3`` ... when taken; ``--name`` or
the preset's name instead of ``train``), picked by :func:`kitaeru.core.run_setup.open_run` from
:data:`.config.TRAIN_RUNS`, and the whole run lives in :meth:`RunFolder.lifecycle`: Ctrl-C ends it
``interrupted`` with the command that continues it (:mod:`.continuation`: ``--resume``, or a fresh
start of the same run before its first checkpoint). :func:`resume_detector` continues an
interrupted run from its ``weights/last.pt`` with the plan recorded in its ``training_result.json``
and its saved config under the settings given now (the one meaning of "given" of ``run_setup``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from kitaeru.core.console import info, print_table, warn
from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.run import RESULT_JSON, RunFolder
from kitaeru.core.run_setup import OpenedRun, find_run, given_keys, given_settings, open_run, saved_config
from kitaeru.core.storage import check_output_path, ensure_writable_dir, is_remote, read_json
from kitaeru.core.tracking import attach_reporter
from kitaeru.recipes.detect.data import YoloDataset, check_labels, list_split_images, load_data_yaml, write_resolved_yaml

from .config import PLAN_KEYS, RECIPE, TRAIN_RUNS, TrainConfig, check_device, plan_field
from .continuation import restart_command, run_session
from .model_source import check_user_weights, check_weight_arguments, check_weights, expand_cfg_argument, resolve_model
from .plan import fit_plan, plan_detect
from .session import LAST, TrainingSession, checkpoint_is_resumable
from .ultralytics_env import prepare_ultralytics, settings_file
from .evaluation import resolve_detect_device

# Set by kitaeru itself; a key=value argument may not change them.
MANAGED_ARGS = {"data", "save_dir", "project", "name", "exist_ok", "resume", "mode", "task", "model"}
Callbacks = Mapping[str, Iterable[Callable]]


@dataclass
class DetectRun:
    """A finished run: its folder and the content of its ``training_result.json``."""

    run_dir: Path
    result: dict[str, Any]


# ---- build data --------------------------------------------------------------------------------


def load_dataset(config: TrainConfig) -> YoloDataset:
    if not config.data_dir:
        raise ConfigError("--data-dir is required (a YOLO data.yaml)")
    dataset = load_data_yaml(config.data_dir)
    check_labels(dataset, ("train", "val"))
    for split, summary in dataset.summaries.items():
        if summary.unreadable:
            first = summary.unreadable[0]
            warn(f"{split}: {len(summary.unreadable)} unreadable image(s) skipped, e.g. {first.image}: {first.reason}")
        if summary.problems:
            first = summary.problems[0]
            warn(f"{split}: {len(summary.problems)} image(s) skipped for bad labels, e.g. {first.label}: {first.reason}")
    return dataset


def build_synthetic(config: TrainConfig, dataset: YoloDataset, output_root: Path) -> tuple[dict[str, Any], list[Path]]:
    """Copy-paste synthetic images for this run (or why there are none) and the folders to train on."""
    if not config.dynamic_synthetic:
        return {"enabled": False, "reason": "--no-dynamic-synthetic"}, []
    missing = [name for name, value in (("--backgrounds-dir", config.backgrounds_dir), ("--annotated-dir", config.annotated_dir)) if not value]
    if missing:
        reason = f"{' and '.join(missing)} not given"
        info(f"copy-paste synthesis skipped: {reason}")
        return {"enabled": False, "reason": reason}, []
    from kitaeru.recipes.detect.copy_paste import synthesize, synthetic_count

    real = dataset.summaries["train"].usable
    count = synthetic_count(real, config.synthetic_ratio)
    if count == 0:
        return {"enabled": False, "reason": f"synthetic ratio {config.synthetic_ratio} x {real} real images = 0"}, []
    cache_root = Path(config.synthetic_cache_dir) if config.synthetic_cache_dir else output_root / "synthetic_cache"
    made = synthesize(config.annotated_dir, config.backgrounds_dir, dataset.names, count, cache_root, config.synthetic)
    info(f"copy-paste synthesis: {made.count} images, {made.objects} objects ({'cache reused' if made.reused else 'new'}: {made.images_dir.parent})")
    return {"enabled": True, "real_images": real, "ratio": config.synthetic_ratio, **made.as_dict(),
            "skipped": made.skipped}, [made.images_dir]


def ultralytics_arguments(config: TrainConfig) -> dict[str, Any]:
    """Ultralytics training arguments from ``train:`` and ``key=value`` (validated by Ultralytics' own check)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    extra = expand_cfg_argument(dict(config.ultralytics))
    managed = sorted(k for k in extra if k in MANAGED_ARGS)
    if managed:
        raise ConfigError(f"{', '.join(managed)}=...: set by kitaeru (use --data-dir, --model, --output-dir or --resume)")
    unknown = sorted(k for k in extra if k not in DEFAULT_CFG_DICT)
    if unknown:
        import difflib

        # a typo such as epoch=3 reaches here (any key that is not a setting goes to Ultralytics)
        known = sorted({*DEFAULT_CFG_DICT, *TrainConfig.model_fields})
        close = sorted({m for k in unknown for m in difflib.get_close_matches(k, known, n=2, cutoff=0.75)})
        hint = f"; did you mean {' or '.join(close)}?" if close else " (see Ultralytics' training settings)"
        raise ConfigError(f"unknown Ultralytics argument(s): {', '.join(unknown)}{hint}")
    args = config.train.model_dump(exclude=set(PLAN_KEYS))
    args.update({k: v for k, v in extra.items() if k not in PLAN_KEYS})
    try:
        get_cfg(overrides={k: v for k, v in args.items()})
    except (TypeError, ValueError, SyntaxError, KeyError) as exc:
        raise ConfigError(f"Ultralytics argument: {str(exc).strip().splitlines()[0]}") from None
    return args


def _check_local(value: str | None, option: str) -> None:
    if value and is_remote(value):
        raise ConfigError(f"{option} {value}: remote locations are not supported for detect (Ultralytics trains from local files)")


# ---- train -------------------------------------------------------------------------------------


def train_detector(config: TrainConfig, *, callbacks: Callbacks | None = None) -> DetectRun:
    """Run ``detect train`` end to end (see module doc); ``callbacks`` are extra Ultralytics callbacks."""
    check_train(config)
    check_user_weights(config.model, trust=config.trust_checkpoint)
    # a cfg= file is read once, here: its arguments join the key=value ones, so the run's saved
    # config.yaml holds what Ultralytics was given (a resume never re-reads a file that may have changed)
    config = config.model_copy(update={"ultralytics": expand_cfg_argument(dict(config.ultralytics))})
    check_weight_arguments(config.ultralytics, trust=config.trust_checkpoint)
    dataset = load_dataset(config)  # every label checked before torch and the device
    config = config.model_copy(update={"device": sagemaker_device(config.device)})
    if not config.tracking.tensorboard:  # --report-to without tensorboard: no events, no server
        config = config.model_copy(update={"tensorboard": False})
    device = resolve_detect_device(config.device)
    prepare_ultralytics(offline=config.offline, home_settings=config.ultralytics_home_settings)
    one_report_per_tracker(config)
    ul_args = ultralytics_arguments(config)
    plan = plan_detect(config, device)
    source = resolve_model(plan.values["model"], offline=config.offline)  # fail before creating anything
    if source.kind == "weights":  # Ultralytics unpickles it fully: refused here unless it is data or trusted
        check_weights(source.load, trust=config.trust_checkpoint, what="--model checkpoint")
    output_root = ensure_writable_dir(Path(config.output_dir).expanduser().resolve())
    synthetic, extra_train = build_synthetic(config, dataset, output_root)
    opened = open_new(config, output_root)
    if config.exist_ok:
        for stale in ("results.csv", RESULT_JSON, "ultralytics_results.csv"):  # overwritten, not continued
            (opened.run_dir / stale).unlink(missing_ok=True)
    run = RunFolder(opened.run_dir, tensorboard=config.tensorboard)
    run.save_config(config)
    attach_reporter(run, config.tracking, config, recipe=RECIPE)  # before the model loads
    run.record_skipped(p.as_skip() for p in dataset.problems)
    run.record_skipped(synthetic.get("skipped", []))
    data_yaml = write_resolved_yaml(dataset, run.path / "data.yaml", extra_train)
    print_table("detect resource plan", ["setting", "value", "from"], plan.rows(), to_stdout=False)
    for note in plan.notes:
        info(note)
    resource_plan = {**plan.as_dict(), "final": fit_plan(plan.values)}
    session = TrainingSession(
        config, run,
        resource_plan=resource_plan,
        ultralytics_args=ul_args,
        data_yaml=data_yaml,
        expected_images=_expected_images(dataset, extra_train),
        fields=_fields(dataset, synthetic, source.as_dict()),
        callbacks=callbacks,
    )
    result = run_session(run, session, recipe=RECIPE)
    return DetectRun(run.path, result)


def open_new(config: TrainConfig, root: Path) -> OpenedRun[TrainConfig]:
    """A new run's folder: ``<root>/<name>`` (``train`` by default), numbered ``name2`` ... when
    taken as Ultralytics numbers ``name=``; with ``--exist-ok`` that folder itself."""
    return open_run(config, TRAIN_RUNS, root=root, name=config.name or TRAIN_RUNS.default_name, exist_ok=config.exist_ok)


def one_report_per_tracker(config: TrainConfig) -> None:
    """Ultralytics' own MLflow / W&B callbacks (on in a user's own Ultralytics settings) would report
    the run a second time beside ``--report-to``: off in memory for the trackers kitaeru reports to
    (the user's settings file is not changed)."""
    from ultralytics.utils import SETTINGS

    for name in config.tracking.trackers:
        if SETTINGS.get(name):
            dict.__setitem__(SETTINGS, name, False)


def sagemaker_device(requested: str) -> str:
    """In a SageMaker job (``SM_MODEL_DIR`` set) with ``SM_NUM_GPUS`` > 1 and ``--device auto``: every GPU of
    the host as Ultralytics' own DDP list (``0,1,...``); otherwise ``requested`` unchanged. (The data
    channel and the model dir arrive as ``--data-dir`` / ``--output-dir`` from the entry point.)"""
    if str(requested).strip().lower() != "auto":
        return requested
    from kitaeru.core.sagemaker import in_sagemaker, read_environment

    if not in_sagemaker():
        return requested
    gpus = read_environment().num_gpus
    return ",".join(str(i) for i in range(gpus)) if gpus > 1 else requested


def check_train(config: TrainConfig) -> None:
    """Cheap checks before any heavy import: local paths that exist, combinations that make sense."""
    for value, option in ((config.data_dir, "--data-dir"), (config.output_dir, "--output-dir"),
                          (config.backgrounds_dir, "--backgrounds-dir"), (config.annotated_dir, "--annotated-dir")):
        _check_local(value, option)
    check_device(config.device)
    check_output_path(config.output_dir, setting="--output-dir", kind="dir")
    expand_cfg_argument(dict(config.ultralytics))  # a cfg= file that is not plain data: refused before work
    if config.resume:
        return
    if not config.data_dir:
        raise ConfigError("--data-dir is required (a YOLO data.yaml)")
    data = Path(config.data_dir).expanduser()
    if not (data.is_file() or (data / "data.yaml").is_file()):  # a folder holding data.yaml (a SageMaker channel)
        from kitaeru.recipes.detect.data import data_yaml_missing

        raise data_yaml_missing(str(config.data_dir))
    load_data_yaml(config.data_dir)  # its content (keys, names, split folders): wrong ones fail before any model
    for value, option in ((config.backgrounds_dir, "--backgrounds-dir"), (config.annotated_dir, "--annotated-dir")):
        if value and config.dynamic_synthetic and not Path(value).expanduser().is_dir():
            raise DataError(f"{option} {value}: folder not found")
    model = config.model
    if model and ("/" in model or "\\" in model) and not Path(model).expanduser().exists():
        raise DataError(f"--model {model}: weights file not found")
    from .model_source import check_model_yaml

    check_model_yaml(model)  # plain data, before any model or TensorBoard starts


def _expected_images(dataset: YoloDataset, extra_train: list[Path]) -> dict[str, list[Path]]:
    bad = {p.image for p in dataset.problems}
    train = [p for p in dataset.images("train") if str(p) not in bad] + list_split_images(extra_train)
    val = [p for p in dataset.images("val") if str(p) not in bad]
    return {"train": train, "val": val}


def _fields(dataset: YoloDataset, synthetic: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    bad = {p.image for p in dataset.problems}
    parity_image = next((str(p) for p in dataset.images("val") if str(p) not in bad), None)
    return {
        "dataset": {
            "yaml": str(dataset.yaml_path),
            "resolved_yaml": "data.yaml",
            "classes": dataset.nc,
            "splits": {k: v.as_dict() for k, v in dataset.summaries.items()},
            "parity_image": parity_image,
        },
        "synthetic": {k: v for k, v in synthetic.items() if k != "skipped"},
        "model_source": source,
        "ultralytics": {"settings_file": str(settings_file())},
    }


def print_summary(result: Mapping[str, Any]) -> None:
    """The human summary of a finished run (stdout; ``--json`` prints the result instead)."""
    run_dir = result.get("run_dir")
    metrics = result.get("metrics") or {}
    rows: list[tuple[str, Any]] = [
        ("run folder", str(run_dir)),
        ("best weights", result.get("best_model_path")),
        *[(k, metrics.get(k)) for k in ("mAP50", "mAP50-95", "precision", "recall")],
        ("epochs completed", f"{result.get('epochs_completed')} / {result.get('epochs_planned')}"),
        ("training time (min)", result.get("training_time_minutes")),
        ("OOM recoveries", len(result.get("oom_recoveries") or [])),
        ("skipped inputs", (result.get("skipped_inputs") or {}).get("count", 0)),
        # the run's TensorBoard server stopped with the run: how to look at the curves now
        ("tensorboard", _tensorboard_now(result)),
    ]
    if result.get("export"):
        rows.append(("onnx max |diff|", result["export"]["max_abs_diff"]))
    print_table("detect train", ["field", "value"], rows)


def _tensorboard_now(result: Mapping[str, Any]) -> str:
    import shlex

    logdir = (result.get("tensorboard") or {}).get("logdir")
    if not logdir or not result.get("run_dir"):
        return "off"
    return f"tensorboard --logdir {shlex.quote(str(Path(result['run_dir']) / logdir))}"


# ---- resume ------------------------------------------------------------------------------------

# Where a run lives is its own: an --output-dir given to find it (--resume latest) or a name does
# not move it, and its saved config keeps them (a tracker run continues with the same parameters).
RUN_PLACE = ("output_dir", "name", "exist_ok")


def find_resumed(config: TrainConfig) -> Path:
    """The run ``--resume`` names: a folder, a ``.pt`` of it, or ``latest`` (the newest unfinished
    run under ``--output-dir``)."""
    return find_run(str(config.resume), Path(config.output_dir).expanduser().resolve(), TRAIN_RUNS)


def resumed_config(config: TrainConfig, run_dir: Path) -> TrainConfig:
    """The run's saved config with the settings given now on top (data, model and epochs may not change)."""
    given = {k: v for k, v in given_settings(config).items() if k not in RUN_PLACE}
    return saved_config(TrainConfig.model_validate(given), run_dir, TRAIN_RUNS, now={"resume": str(run_dir)})


def check_resumable(run_dir: Path, previous: Mapping[str, Any], *, trust: bool) -> int:
    """Refuse (one line) a run Ultralytics cannot continue; returns the epoch its last.pt holds."""
    if previous.get("status") == "completed":
        raise DataError(f"--resume {run_dir}: the run already finished ({previous.get('epochs_completed')} epochs); start a new run instead")
    if not (run_dir / LAST).is_file():
        raise DataError(f"--resume {run_dir}: no {LAST} (the run stopped before its first epoch ended); "
                        f"start it again with: {restart_command(run_dir)}")
    resumable, epoch = checkpoint_is_resumable(run_dir / LAST, trust=trust)
    if not resumable:
        raise DataError(f"--resume {run_dir}: {LAST} is a finished model (no optimizer state); start a new run instead")
    if not (run_dir / "data.yaml").is_file():
        raise DataError(f"--resume {run_dir}: data.yaml of the run is missing")
    return epoch


def resumed_plan(previous: Mapping[str, Any], config: TrainConfig, given: set[str], run_dir: Path) -> dict[str, Any]:
    """The run's recorded resource plan, with the ladder's knobs given now (``--batch-size`` ...) on top."""
    resource_plan = dict(previous.get("resource_plan") or {})
    if "final" not in resource_plan or "values" not in resource_plan:
        raise DataError(f"--resume {run_dir}: {RESULT_JSON} has no resource plan")
    final = dict(resource_plan["final"])
    final.update({k: config.plan_value(k) for k in ("batch", "imgsz", "workers", "cache")
                  if plan_field(k) in given and config.plan_value(k) is not None})
    resource_plan["final"] = final
    return resource_plan


def resume_detector(config: TrainConfig, *, callbacks: Callbacks | None = None) -> DetectRun:
    """Continue an interrupted run (``config.resume``) from its ``weights/last.pt`` with its recorded plan.

    The settings given with ``--resume`` (flags, ``key=value``, presets: given, whatever their
    value) go over the run's saved config: the ladder's knobs (batch size, image size, workers,
    cache), the device, TensorBoard and export settings may change; data, model and epochs may not
    (Ultralytics resumes the checkpoint's run as it was).
    """
    given = given_keys(config)
    run_dir = find_resumed(config)
    previous = read_json(run_dir / RESULT_JSON)
    # refused before the saved config is read: a swapped last.pt is only loaded when trusted now
    epoch = check_resumable(run_dir, previous, trust=config.trust_checkpoint)
    config = resumed_config(config, run_dir)
    if not config.tracking.tensorboard:
        config = config.model_copy(update={"tensorboard": False})
    device = resolve_detect_device(config.device)
    prepare_ultralytics(offline=config.offline, home_settings=config.ultralytics_home_settings)
    one_report_per_tracker(config)
    ul_args = ultralytics_arguments(config)
    resource_plan = resumed_plan(previous, config, given, run_dir)
    resource_plan["device"] = device.as_dict()
    info(f"resuming {run_dir} after epoch {epoch} of {resource_plan['values'].get('epochs')} with plan {resource_plan['final']}")
    run = RunFolder(run_dir, tensorboard=config.tensorboard)
    attach_reporter(run, config.tracking, config, recipe=RECIPE, resume=True)  # the same tracker runs continue
    run.record_skipped((previous.get("skipped_inputs") or {}).get("items", []))
    fields = {k: previous[k] for k in ("dataset", "synthetic", "model_source", "ultralytics") if k in previous}
    session = TrainingSession(
        config, run,
        resource_plan=resource_plan,
        ultralytics_args=ul_args,
        data_yaml=run_dir / "data.yaml",
        expected_images={},  # Ultralytics' dataset check of the first session is kept (below)
        fields=fields,
        callbacks=callbacks,
        previous=previous,
    )
    session.state.dataset_check = (previous.get("dataset") or {}).get("ultralytics_check")
    result = run_session(run, session, recipe=RECIPE, resume_first=True)
    return DetectRun(run.path, result)
