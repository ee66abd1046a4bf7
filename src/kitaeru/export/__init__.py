"""Model export (ONNX) with an onnxruntime parity check."""
