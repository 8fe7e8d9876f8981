"""The suite's fixtures and offline settings; the tiny models and data they use come from tiny_task_models.py."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from huggingface_hub import constants  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_server import HubServer  # noqa: E402
from tiny_task_models import CORE_WORDS, random_classification_dataset, tiny_bert, tiny_tokenizer  # noqa: E402


@pytest.fixture(autouse=True)
def package_logs_reach_caplog():
    """hf_distill's logger does not propagate to the root logger (see hf_distill/log.py); in tests it does, so that
    `caplog` sees its records."""

    from hf_distill.log import get_logger

    root = get_logger("hf_distill")
    root.propagate = True
    yield
    root.propagate = False


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, above all on a busy machine (`pytest.mark.usefixtures("one_thread")`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def teacher():
    return tiny_bert(num_layers=4, seed=0)


@pytest.fixture
def dataset():
    return random_classification_dataset()


@pytest.fixture
def teacher_folder(tmp_path):
    """A saved 4-layer teacher (with tokenizer) whose labels are negative / neutral / positive."""
    folder = tmp_path / "teacher"
    tiny_bert(num_layers=4, seed=0, vocab_size=len(CORE_WORDS) + 5).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Start a server and point the Hub client at it: HF_ENDPOINT, a valid HF_TOKEN, HF_HOME in tmp, online."""
    servers = []

    def start(xet: bool = True, lfs_patterns=("*.safetensors", "*.png"), serve_xet: bool = True) -> HubServer:
        server = HubServer(lfs_patterns=lfs_patterns, serve_xet=serve_xet).start()
        servers.append(server)
        home = tmp_path / "hf_home"
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HOME", str(home))
        monkeypatch.setenv("HF_TOKEN", server.token)
        if xet:
            monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)
        else:
            monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        # The client reads these at import: set the module constants too.
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", not xet)
        monkeypatch.setattr(constants, "HF_HOME", str(home))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        # transformers keeps one HfApi, whose endpoint was fixed when it was built: make it build a new one.
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
        return server

    yield start
    for server in servers:
        server.stop()
