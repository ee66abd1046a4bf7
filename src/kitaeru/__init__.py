"""kitaeru (鍛える): train, fine-tune, embed, index, search and export vision and multimodal models."""

__version__ = "0.1.0"
