from pathlib import Path

import graphopt as go
from graphopt.testing import check_pass

GOLDEN = sorted((Path(__file__).parent / "golden").glob("dce_*.gir"))


def test_contract_on_generated_graphs() -> None:
    check_pass("dce")


def test_keep_parameters_option() -> None:
    g = go.parse(GOLDEN[0].read_text().partition("# expected")[0])
    kept = go.run_pipeline(g, "dce{keep-parameters=true}").graph
    assert [p.name for p in kept.parameters] == ["w", "unused"]
    assert [n.op for n in kept] == ["linear", "relu", "tanh"]


def test_dce_is_linear_on_a_long_dead_chain() -> None:
    """A 20k-node dead chain goes in one walk (a quadratic pass would take minutes here)."""
    g = go.Graph()
    x = g.add_input(go.TensorType("float32", [4]), "x")
    v = x
    for _ in range(20_000):
        v = g.create("relu", [v]).result
    g.outputs = [x]
    result = go.run_pipeline(g, "dce", in_place=True)
    assert len(result.graph) == 0 and result.records[0].changed
