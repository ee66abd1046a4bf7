"""Readers of the data users bring (scene folders, nuScenes, MCAP/.npy time series, image folders,
YOLO data.yaml, document pools) and generators of built-in sample data."""
