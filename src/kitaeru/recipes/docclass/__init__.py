"""Document classifier by metric learning (seed 003): train a feature network on synthetic photos of
template documents, export its inference branch to ONNX, register templates and classify photos by
cosine similarity with an ``unknown`` threshold.

Modules, in the recipe's order: ``config`` (schema), ``data`` (build data), ``module`` (the Lightning
module: model, loss, metrics), ``train`` (fit → evaluate → save), ``checkpoint`` (load a trained
network), ``export`` (ONNX), ``inference`` and ``bank`` (register / classify, torch-free on ONNX).
"""
