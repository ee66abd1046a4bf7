"""``kitaeru detect``: YOLOv8 fine-tuning on Ultralytics with GPU-tier plans, out-of-memory recovery,
TensorBoard, layer-wise LR decay, copy-paste synthesis and ONNX export (seed 002).

Modules: ``config`` (schema, tier table), ``plan`` (resources), ``train`` (the command's flow),
``session`` (attempts inside the OOM ladder, the result file), ``evidence`` (Ultralytics callbacks),
``llrd``, ``export``, ``validate``, ``model_source``, ``ultralytics_env`` (offline/private),
``tensorboard_server``. Only ``config`` is light; the rest import Ultralytics/torch when used.
"""
