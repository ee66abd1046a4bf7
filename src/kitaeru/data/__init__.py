"""Readers shared by several jobs (images with bounded, draft decoding; scene folders, MCAP/.npy
time series; the vector DB). Readers that only one job uses (YOLO data.yaml, document pools,
floor-plan captions, nuScenes tables, the generated sample scenes) live in that job's recipe package."""
