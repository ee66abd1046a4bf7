"""The entry point of a SageMaker PyTorch estimator that runs any kitaeru training recipe.

SageMaker starts ``python sagemaker_entry.py --recipe multimodal --epochs 30 ...`` (the estimator's
hyperparameters). This script turns them, and the job's ``SM_*`` environment (channels, model dir,
GPUs, hosts), into a kitaeru command line and runs it:

* ``SM_CHANNEL_TRAINING`` (or the only channel) → ``--data-dir``; ``SM_MODEL_DIR`` → ``--output-dir``;
* ``SM_NUM_GPUS`` > 1 → ``--devices N``; several ``SM_HOSTS`` → ``--num-nodes M`` with ``MASTER_ADDR``
  (the first host) and ``NODE_RANK`` (this host's place) for Lightning.

Locally, with the variables set by hand, it runs the same way (see tests/test_scale_sagemaker.py).
"""

from __future__ import annotations

import importlib
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from kitaeru.cli import run
    from kitaeru.core.errors import ConfigError
    from kitaeru.cli.generate import command_flags
    from kitaeru.core.sagemaker import read_environment, recipe_of, sagemaker_argv

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        recipe, mode = recipe_of(argv)
        accepts = None
        if recipe:
            try:
                package = importlib.import_module(f"kitaeru.recipes.{recipe}")
            except ModuleNotFoundError:
                raise ConfigError(f"hyperparameters: unknown recipe {recipe!r}") from None
            accepts = command_flags(package.RECIPE.mode(mode).schema)  # the generated command's own flags
        command = sagemaker_argv(argv, accepts=accepts)
        os.environ.update(read_environment().launcher_environment())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("kitaeru " + " ".join(command), file=sys.stderr)
    return run(command)


if __name__ == "__main__":
    raise SystemExit(main())
