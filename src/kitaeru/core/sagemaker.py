"""kitaeru as a SageMaker training entry point: the ``SM_*`` environment turned into settings.

A SageMaker PyTorch estimator runs its entry point as ``python ENTRY --key value ...`` (the
hyperparameters), in a container where the job's environment says where everything is:

=====================  =====================================================================
``SM_CHANNEL_<NAME>``  each input channel's local folder (``training`` → ``--data-dir``)
``SM_MODEL_DIR``       what SageMaker uploads as ``model.tar.gz`` (→ ``--output-dir``)
``SM_OUTPUT_DATA_DIR`` other outputs (``output.tar.gz``)
``SM_NUM_GPUS``        GPUs on this host (> 1 → ``--devices N``)
``SM_HOSTS``           the hosts of the job, JSON (> 1 → ``--num-nodes M``; with
``SM_CURRENT_HOST``    this host's place: ``NODE_RANK``, ``MASTER_ADDR`` for Lightning)
=====================  =====================================================================

:func:`sagemaker_argv` turns the hyperparameters into a kitaeru command line: ``recipe`` (and
``mode``, default ``train``) pick the command, ``--key_name value`` becomes ``--key-name value``,
``--flag True/False`` becomes ``--flag`` / ``--no-flag``, and the settings above are added unless the
hyperparameters give them. Everything else is the recipe's own. Only the shared vocabulary
(``--data-dir``, ``--output-dir``, ``--devices``, ``--num-nodes``) is used, so this module knows no recipe;
the entry point (``examples/sagemaker_entry.py``) passes the recipe's flags in and runs the CLI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .errors import ConfigError

DEFAULT_PORT = "29500"


@dataclass(frozen=True)
class SageMakerEnv:
    """What a SageMaker training container's environment says."""

    channels: dict[str, str] = field(default_factory=dict)
    model_dir: str | None = None
    output_data_dir: str | None = None
    num_gpus: int = 0
    hosts: tuple[str, ...] = ()
    current_host: str | None = None

    @property
    def num_nodes(self) -> int:
        return max(1, len(self.hosts))

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host) if self.current_host in self.hosts else 0

    @property
    def data_dir(self) -> str | None:
        """The ``training`` channel, else the only channel."""
        if "training" in self.channels:
            return self.channels["training"]
        return next(iter(self.channels.values())) if len(self.channels) == 1 else None

    def launcher_environment(self) -> dict[str, str]:
        """What Lightning needs to join the nodes: the first host is the main one."""
        if self.num_nodes < 2:
            return {}
        return {"MASTER_ADDR": self.hosts[0], "MASTER_PORT": os.environ.get("MASTER_PORT", DEFAULT_PORT),
                "NODE_RANK": str(self.node_rank)}


def in_sagemaker(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return "SM_MODEL_DIR" in env or "SM_TRAINING_ENV" in env


def read_environment(env: Mapping[str, str] | None = None) -> SageMakerEnv:
    env = os.environ if env is None else env
    channels = {k[len("SM_CHANNEL_"):].lower(): v for k, v in env.items() if k.startswith("SM_CHANNEL_")}
    try:
        hosts = tuple(json.loads(env.get("SM_HOSTS") or "[]"))
    except json.JSONDecodeError:
        raise ConfigError(f"SM_HOSTS: not a JSON list ({env.get('SM_HOSTS')!r})") from None
    try:
        gpus = int(env.get("SM_NUM_GPUS") or 0)
    except ValueError:
        raise ConfigError(f"SM_NUM_GPUS: not a number ({env.get('SM_NUM_GPUS')!r})") from None
    return SageMakerEnv(channels=channels, model_dir=env.get("SM_MODEL_DIR"), output_data_dir=env.get("SM_OUTPUT_DATA_DIR"),
                        num_gpus=gpus, hosts=hosts, current_host=env.get("SM_CURRENT_HOST"))


def _hyperparameters(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """``--key value`` pairs (a key followed by another key, or last, has no value)."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("--"):
            raise ConfigError(f"hyperparameters: expected --key value, got {word!r}")
        key, _, inline = word[2:].partition("=")
        if inline:
            pairs.append((key, inline))
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            pairs.append((key, argv[i + 1]))
            i += 2
        else:
            pairs.append((key, None))
            i += 1
    return pairs


def sagemaker_argv(argv: Sequence[str], env: Mapping[str, str] | None = None,
                   accepts: Sequence[str] | None = None) -> list[str]:
    """The kitaeru command line for this SageMaker job (see the module docstring).

    ``accepts``: the flags the recipe's command takes (without ``--``); the environment's settings
    are added only for flags it takes (None: all of them).
    """
    sm = read_environment(env)
    recipe, mode = None, "train"
    words: list[str] = []
    given: set[str] = set()
    for key, value in _hyperparameters(argv):
        name = key.replace("_", "-")
        if name == "recipe":
            recipe = value
            continue
        if name == "mode":
            mode = value or mode
            continue
        given.add(name)
        if value is not None and value.lower() in ("true", "false"):
            words.append(f"--{name}" if value.lower() == "true" else f"--no-{name}")
        elif value is None:
            words.append(f"--{name}")
        else:
            words.extend([f"--{name}", value])
    if not recipe:
        raise ConfigError("hyperparameters: give recipe (multimodal, docclass, lora, detect)")

    def wanted(flag: str, *aliases: str) -> bool:
        taken = accepts is None or flag in accepts
        return taken and not ({flag, *aliases} & given)

    data_source = {"data-dir", "dataset", "data", "use-sample-data", "nuscenes-path", "images"}
    if sm.data_dir and wanted("data-dir") and not (data_source & given):
        words.extend(["--data-dir", sm.data_dir])
    if sm.model_dir and wanted("output-dir", "output"):
        words.extend(["--output-dir", sm.model_dir])
    if sm.num_gpus > 1 and wanted("devices"):
        words.extend(["--devices", str(sm.num_gpus)])
    if sm.num_nodes > 1 and wanted("num-nodes"):
        words.extend(["--num-nodes", str(sm.num_nodes)])
    return [recipe, mode, *words]


def recipe_of(argv: Sequence[str]) -> tuple[str | None, str]:
    """The ``recipe`` and ``mode`` hyperparameters (mode defaults to ``train``)."""
    values = dict(_hyperparameters(argv))
    return values.get("recipe"), values.get("mode") or "train"
