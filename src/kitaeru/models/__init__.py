"""Encoders created by name (torchvision:, timm:, open_clip:, sentence-transformers:, local paths),
projectors and heads."""
