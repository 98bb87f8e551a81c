"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

import graphopt as go
from graphopt.testing import check_pass

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write files
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) == 6
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    check_pass("simplify-negations")
    assert "simplify-negations" in go.pipeline.registered_passes()
    assert (tmp_path / "resnet18.onnx").exists() and (tmp_path / "pruned.pt").exists()
