"""Vector index build / load / search, with its metadata table."""
