"""Readers shared by several jobs (images with bounded, draft decoding; scene folders, nuScenes,
MCAP/.npy time series; the vector DB) and the built-in sample scenes. Readers that only one job
uses (YOLO data.yaml, document pools, floor-plan captions) live in that job's recipe package."""
