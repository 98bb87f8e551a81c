"""Backend emitters (ONNX for ONNX Runtime / TensorRT, torch.fx) land here; each comes with a
capability check that says what it cannot lower."""
