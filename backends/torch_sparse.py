"""2:4 weights in the form torch's semi-structured sparse kernels take (CUTLASS and cuSPARSELt, on
NVIDIA GPUs from sm80 on): the linear weights of a `to_torch` module that hold the pattern become
`SparseSemiStructuredTensor` parameters, so `F.linear` runs the sparse tensor-core kernel.

CPU runtimes gain size, not speed, from 2:4 (benchmarks/README.md measures it); this path needs a
GPU, and on a machine without one only the choice of weights can run."""

from __future__ import annotations

import torch
from graphopt.backends.torch import IMPLS
from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured
from torch.sparse.semi_structured import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

from graphopt.errors import UnsupportedError


def _linear_weights(module: torch.fx.GraphModule) -> list[str]:
    """The attribute paths read as the weight operand of a linear node."""
    linear = IMPLS["linear"]
    return list(dict.fromkeys(str(n.args[1].target) for n in module.graph.nodes
                              if n.op == "call_function" and n.target is linear and n.args[1].op == "get_attr"))


def semi_structured_plan(module: torch.fx.GraphModule, dtype: torch.dtype = torch.float16) -> dict[str, str | None]:
    """Every linear weight -> None when it can take the 2:4 sparse form in `dtype`, else why not
    (the pattern, or the kernels' shape rule: both dims multiples of their minimum)."""
    kernels = SparseSemiStructuredTensorCUTLASS if SparseSemiStructuredTensor._FORCE_CUTLASS \
        else SparseSemiStructuredTensorCUSPARSELT  # the one to_sparse_semi_structured will use
    rules = kernels._DTYPE_SHAPE_CONSTRAINTS
    if dtype not in rules:
        raise UnsupportedError(f"semi-structured sparsity takes {', '.join(map(str, rules))}, not {dtype}")
    rows, cols = rules[dtype].sparse_min_rows, rules[dtype].sparse_min_cols
    plan: dict[str, str | None] = {}
    for path in _linear_weights(module):
        w = module.get_parameter(path) if path in dict(module.named_parameters()) else module.get_buffer(path)
        m, n = w.shape
        if m % rows or n % cols:
            plan[path] = f"shape {m}x{n}: the kernels need multiples of {rows}x{cols}"
        elif int((w.detach().reshape(m, n // 4, 4) != 0).sum(-1).max()) > 2:
            plan[path] = "not 2:4 along its input dim (run sparsify{pattern=2:4} first)"
        else:
            plan[path] = None
    return plan


def to_semi_structured(module: torch.fx.GraphModule, dtype: torch.dtype = torch.float16) -> dict[str, str | None]:
    """Move `module` to the GPU in `dtype` and give every linear weight that holds the 2:4 pattern
    the sparse form, in place; returns the plan (which weights changed, why the others did not)."""
    if not torch.cuda.is_available():
        raise UnsupportedError("semi-structured 2:4 kernels run on NVIDIA GPUs (sm80 or newer) and no CUDA device "
                               "is visible; on the CPU keep the dense 2:4 weights (they compress, not speed up)")
    plan = semi_structured_plan(module, dtype)
    module.to(device="cuda", dtype=dtype)
    for path, why in plan.items():
        if why is None:
            owner, _, leaf = path.rpartition(".")
            parent = module.get_submodule(owner)
            weight = getattr(parent, leaf)
            setattr(parent, leaf, torch.nn.Parameter(to_sparse_semi_structured(weight.detach().contiguous()),
                                                     requires_grad=False))
    return plan
