"""Frontends: PyTorch (torch.export) and ONNX into the graph IR. They import torch / onnx, so
graphopt loads them on first use only."""
