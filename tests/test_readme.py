"""The README's Python examples run as written."""

import re
from pathlib import Path

import graphopt as go
from graphopt.testing import check_pass

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    check_pass("simplify-negations")
    assert "simplify-negations" in go.pipeline.registered_passes()
