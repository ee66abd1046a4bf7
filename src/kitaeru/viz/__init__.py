"""Reusable pictures of embeddings: the UMAP projection, scatter plots and interactive maps, thumbnails.

The `kitaeru map` job that uses them lives in ``kitaeru.recipes.map``.
"""
