"""Tiny models and data built in-process: no network, seeded."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from huggingface_hub import constants  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_server import HubServer  # noqa: E402

VOCAB_SIZE = 99
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def tiny_bert_config(num_layers=4, hidden=32, heads=4, **overrides):
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
        id2label=dict(LABELS),
        label2id={v: k for k, v in LABELS.items()},
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_bert(num_layers=4, hidden=32, heads=4, seed=0, **overrides):
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(num_layers, hidden, heads, **overrides))


def random_classification_dataset(n=32, seed=0, min_len=4, max_len=12):
    """Token ids of random lengths (so batches need padding) with labels 0..2; no padding applied yet."""
    generator = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=generator))
        ids = torch.randint(5, VOCAB_SIZE, (length,), generator=generator).tolist()
        rows["input_ids"].append([2, *ids, 3])
        rows["attention_mask"].append([1] * (length + 2))
        rows["labels"].append(int(torch.randint(0, 3, (1,), generator=generator)))
    return Dataset.from_dict(rows)


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


def pad_collate(features):
    """Right-pads a list of examples to the longest one (dynamic padding, as DataCollatorWithPadding does)."""
    length = max(len(f["input_ids"]) for f in features)
    batch = {
        key: torch.tensor([f[key] + [0] * (length - len(f[key])) for f in features])
        for key in ("input_ids", "attention_mask")
    }
    batch["labels"] = torch.tensor([f["labels"] for f in features])
    return batch


WORDS = "good bad great awful fine okay love hate the a is was movie film day it not very".split()


def tiny_tokenizer():
    """A word-level BERT tokenizer built from a dict (BertTokenizerFast(vocab_file=...) ignores the file in 5.x)."""
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return BertTokenizer(vocab={token: i for i, token in enumerate(specials + WORDS)})


def write_sentiment_rows(path, count, seed=0, labels=("negative", "neutral", "positive")):
    """Writes `count` rows of random sentences with a `sentiment` label, as CSV or JSON Lines by extension."""
    import json
    import random

    rng = random.Random(seed)
    rows = [
        {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))), "sentiment": rng.choice(labels)}
        for _ in range(count)
    ]
    with open(path, "w") as handle:
        if str(path).endswith(".csv"):
            handle.write("text,sentiment\n" + "".join(f"{r['text']},{r['sentiment']}\n" for r in rows))
        else:
            handle.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def teacher_folder(tmp_path):
    """A saved 4-layer teacher (with tokenizer) whose labels are negative / neutral / positive."""
    folder = tmp_path / "teacher"
    tiny_bert(num_layers=4, seed=0, vocab_size=len(WORDS) + 5).save_pretrained(folder)
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
