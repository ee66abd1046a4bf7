"""Multimodal scene search (seed 000): text / image (/ time-series) projectors trained contrastively
over frozen encoders on driving scenes, a vector DB, a 2-D map, evaluation and search.

Modules, in pipeline order: ``config`` (schema) → ``data`` (source, split) → ``features`` (frozen,
cached) → ``model`` (LightningModule, metrics) → ``train`` (fit + evidence) → ``save`` (weights,
vector DB, map) → ``export`` (skip-training export, evaluate, search).
"""
