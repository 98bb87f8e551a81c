"""Small graph builders shared by the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import graphopt as go


def conv_relu_graph(batch: int | str = "N") -> go.Graph:
    """x -> conv(w, b) -> relu -> add(., conv) -> out, with a dead sigmoid branch."""
    rng = np.random.default_rng(0)
    g = go.Graph()
    x = g.add_input(go.TensorType("float32", [batch, 3, 8, 8]), "x")
    w = g.add_parameter(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.weight")
    b = g.add_parameter(rng.standard_normal(4).astype(np.float32), "conv.bias")
    conv = g.create("conv2d", [x, w, b], {"padding": [1, 1]}, loc="conv", names=["conv"]).result
    act = g.create("relu", [conv], loc="act", names=["act"]).result
    g.create("sigmoid", [conv], loc="gate", names=["gate"])
    out = g.create("add", [act, conv], loc="residual", names=["out"]).result
    g.outputs = [out]
    return g


def sample_input(graph: go.Graph, batch: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal([batch if isinstance(d, str) else d for d in v.shape]).astype(np.float32)
            for v in graph.inputs]


def failing_factory() -> None:
    """A model factory that raises, as a user's factory with a bug does."""
    raise RuntimeError("checkpoint not found")


def tiny_transformer(family: str) -> tuple[object, tuple[object, object]]:
    """A two-layer, 4-head Hugging Face model (gpt2, t5 or distilbert) returning its last hidden state,
    with token ids and a padding mask for 2 sequences of 16 tokens."""
    import torch
    import transformers as tf

    class LastHidden(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    torch.manual_seed(0)
    model = {
        "gpt2": lambda: tf.GPT2Model(tf.GPT2Config(n_layer=2, n_embd=64, n_head=4)),
        "t5": lambda: tf.T5EncoderModel(tf.T5Config(num_layers=2, d_model=64, num_heads=4, d_ff=128, d_kv=16)),
        "distilbert": lambda: tf.DistilBertModel(tf.DistilBertConfig(n_layers=2, dim=64, n_heads=4, hidden_dim=128)),
    }[family]().eval()
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 12:] = 0
    return LastHidden(model).eval(), (ids, mask)


def traced(name: str, size: int = 32, **kwargs: object) -> tuple[go.Graph, np.ndarray]:
    """A torchvision model (VisionTransformer: a small one, 4 heads of 16) with seeded random weights."""
    import torch
    import torchvision

    torch.manual_seed(0)
    if name == "vit":
        kwargs = {"image_size": size, "patch_size": 8, "num_layers": 2, "num_heads": 4, "hidden_dim": 64,
                  "mlp_dim": 128, "num_classes": 10, **kwargs}
    model = getattr(torchvision.models, "VisionTransformer" if name == "vit" else name)(**kwargs).eval()
    with torch.no_grad():  # zero-initialised heads (ViT) would make every output 0
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                torch.nn.init.normal_(p, std=0.02)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    return go.from_torch(model, (torch.from_numpy(x),)), x


def trained_on_digits(net: torch.nn.Module, images: bool, epochs: int) -> tuple[go.Graph, list, np.ndarray, np.ndarray]:
    """`net` trained (Adam, seed 0) on scikit-learn's digits, 1200 training samples, as images
    [1, 8, 8] or flat [64]: its graph (dynamic batch), the training inputs one a sample, and the
    held-out inputs and labels."""
    import torch
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[:, None] if images else data.data).astype(np.float32) / 16.0
    y = data.target
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1200], order[1200:]
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in range(0, len(train), 64):
            optimizer.zero_grad()
            batch = train[i:i + 64]
            torch.nn.functional.cross_entropy(net(torch.from_numpy(x[batch])), torch.from_numpy(y[batch])).backward()
            optimizer.step()
    graph = go.from_torch(net.eval(), (torch.from_numpy(x[:4]),), dynamic_batch=True)
    return graph, [(x[i:i + 1],) for i in train], x[test], y[test]


def torchrun(script: str, *args: str, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """`script args` under `torchrun --nproc_per_node=processes` (gloo over loopback, a thread each, a
    60 s collective timeout), run from the repository root with its output captured."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd()),
           "GRAPHOPT_DIST_TIMEOUT": "60"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                           "--master_addr=127.0.0.1", f"--master_port={port}", script, *args],
                          env=env, capture_output=True, text=True, timeout=300)


# Ops generated graphs draw from where a pass works on layers: the layers and what surrounds them
# in real models (without, most generated graphs hold no layer to work on).
LAYER_OPS = ("conv2d", "linear", "matmul", "relu", "gelu", "add", "mul", "cat", "max_pool2d", "adaptive_avg_pool2d",
             "flatten")
