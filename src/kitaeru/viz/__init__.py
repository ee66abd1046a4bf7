"""Pictures of embeddings: UMAP projections, scatter plots and interactive maps."""
