"""Train the multimodal scene search on SageMaker with kitaeru as the estimator's entry point.

The multimodal guide's estimator call, with kitaeru doing the training: SageMaker copies
``examples/`` (``source_dir``) into a PyTorch container, installs ``requirements.txt`` (kitaeru),
and runs ``python sagemaker_entry.py --recipe multimodal --epochs 30 ...``. The entry point maps the
job's environment to kitaeru's settings: the ``training`` channel → ``--data-dir``, ``SM_MODEL_DIR`` →
``--output-dir`` (so ``model.tar.gz`` holds the projectors, ``vector_db.json`` and the run evidence),
``SM_NUM_GPUS`` → ``--devices``, several instances → ``--num-nodes`` (Lightning ddp across them).

    pip install sagemaker
    python examples/sagemaker_train.py --role arn:aws:iam::123456789012:role/SageMakerRole \\
        --data s3://my-bucket/scenes/ --instance-type ml.g5.12xlarge --instance-count 1
    python examples/sagemaker_train.py --dry-run      # print the kitaeru command the container would run

Written against the SageMaker Python SDK v2 (``sagemaker.pytorch.PyTorch``); not run here (no AWS
account on the build machines): the entry point itself is tested with a simulated environment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The multimodal guide's hyperparameters, in kitaeru's vocabulary (SageMaker passes them as --key value).
HYPERPARAMETERS = {
    "recipe": "multimodal",
    "epochs": 30,
    "batch_size": 32,
    "learning_rate": 1e-4,
    "embed_dim": 256,
    "include_timeseries": True,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", help="IAM role SageMaker assumes")
    parser.add_argument("--data", help="s3:// folder of scenes (scenes_metadata.json + images/ + timeseries/)")
    parser.add_argument("--instance-type", default="ml.g5.2xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="print the command the container would run and stop")
    args = parser.parse_args()

    if args.dry_run:
        from kitaeru.core.sagemaker import sagemaker_argv

        gpus = {"ml.g5.2xlarge": 1, "ml.g5.12xlarge": 4, "ml.p4d.24xlarge": 8}.get(args.instance_type, 1)
        env = {"SM_CHANNEL_TRAINING": "/opt/ml/input/data/training", "SM_MODEL_DIR": "/opt/ml/model",
               "SM_NUM_GPUS": str(gpus),
               "SM_HOSTS": json.dumps([f"algo-{i + 1}" for i in range(args.instance_count)]), "SM_CURRENT_HOST": "algo-1"}
        words = []
        for key, value in HYPERPARAMETERS.items():
            words += [f"--{key}", str(value)]
        print("kitaeru " + " ".join(sagemaker_argv(words, env)))
        return
    if not (args.role and args.data):
        parser.error("--role and --data are needed to start a job (or use --dry-run)")
    from sagemaker.pytorch import PyTorch

    estimator = PyTorch(
        entry_point="sagemaker_entry.py",
        source_dir=str(HERE),               # sagemaker_entry.py + requirements.txt
        role=args.role,
        framework_version="2.5",
        py_version="py311",
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        hyperparameters=HYPERPARAMETERS,
        # several instances: the entry point gives Lightning MASTER_ADDR / NODE_RANK from SM_HOSTS
        environment={"KITAERU_NO_PROGRESS": "1"},
    )
    estimator.fit({"training": args.data})
    print("model artefacts:", estimator.model_data)


if __name__ == "__main__":
    main()
