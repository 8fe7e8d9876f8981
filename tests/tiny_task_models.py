"""The shared factory of the test suite: tiny models of each task head, a word tokenizer, random batches, tiny data
files, the trainer settings the tests start from, and `CASES`, the one table of task cases that task tests are
parametrised over.

Adding a task: one row in `CASES` (and, if its data is new, a branch in `random_task_rows` and `task_rows`).
This is a plain module (no tests, no fixtures): test files import their helpers from it, never from each other or
from `conftest.py`, which holds the fixtures.
"""

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import yaml
from datasets import Dataset
from transformers import (
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    GPT2LMHeadModel,
    LlamaForCausalLM,
)

VOCAB_SIZE = 99
MASK_ID = 4
TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# The first 18 words (`CORE_WORDS`) are the vocabulary of the corpus sentences and of `tiny_tokenizer()`; the others
# serve the data tests.
WORDS = (
    "good bad great awful fine okay love hate the a is was movie film day it not very "
    "plot actors music ok boring fun loved hated really story ending cat dog sat on mat sleeps outside inside "
    "animal weather sunny rainy today na null sarah london lives in my name where do i live paris how"
).split()
CORE_WORDS = WORDS[:18]


def tiny_tokenizer(words=CORE_WORDS):
    """A word-level BERT tokenizer built from a dict (`BertTokenizerFast(vocab_file=...)` ignores the file in 5.x);
    `tiny_tokenizer(WORDS)` knows the words of the data tests too."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab={token: i for i, token in enumerate(SPECIAL_TOKENS + list(words))})


def vocab_tokenizer():
    """`tiny_tokenizer` filled up to `VOCAB_SIZE` tokens (`CORE_WORDS`, then `word23`, `word24`, ...): the tokenizer of
    a tiny model that is read with random ids below `VOCAB_SIZE`, and checked against its embeddings (a tokenizer of
    less than half the rows is refused as another model's)."""
    filler = [f"word{i}" for i in range(len(SPECIAL_TOKENS) + len(CORE_WORDS), VOCAB_SIZE)]
    return tiny_tokenizer([*CORE_WORDS, *filler])


def word_pieces(word: str) -> list[str]:
    """How `word_piece_tokenizer` cuts a word: words of 4 letters or more in two (`movie` -> `mo ##vie`)."""
    return [word] if len(word) < 4 else [word[:2], "##" + word[2:]]


def word_piece_tokenizer(words=CORE_WORDS):
    """A second tokenizer of the same words, of another vocabulary: a WordPiece tokenizer that cuts each word of 4
    letters or more in two (`movie` -> `mo ##vie`) and keeps the shorter ones whole, so that its tokens and the
    word tokenizer's (`tiny_tokenizer`) cover the same text in different pieces, and some tokens are spelled alike."""
    from transformers import BertTokenizer

    pieces = list(dict.fromkeys(piece for word in words for piece in word_pieces(word)))
    return BertTokenizer(vocab={token: i for i, token in enumerate(SPECIAL_TOKENS + pieces)})


def tiny_bpe_tokenizer(vocab_size=300):
    """A byte-level BPE tokenizer (GPT-2's kind: every text round-trips, a character may span tokens) trained on the
    corpus words and a few accented ones, `<s>` its BOS token and `<|endoftext|>` its EOS and padding token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = [" ".join(WORDS), "the cat sat on the mat", "naïve café déjà vu", "it is very good today"] * 4
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>", "<s>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def bert_config(num_layers=4, hidden=32, heads=4, vocab_size=VOCAB_SIZE, **kwargs):
    return family_config("bert", hidden=hidden, layers=num_layers, heads=heads, vocab_size=vocab_size, **kwargs)


def _seeded(seed, build):
    torch.manual_seed(seed)
    return build()


def token_classifier(num_layers=4, hidden=32, seed=0, **kwargs):
    config = bert_config(num_layers, hidden, id2label=dict(TAGS), label2id={v: k for k, v in TAGS.items()}, **kwargs)
    return _seeded(seed, lambda: BertForTokenClassification(config))


def question_answerer(num_layers=4, hidden=32, seed=0, **kwargs):
    return _seeded(seed, lambda: BertForQuestionAnswering(bert_config(num_layers, hidden, num_labels=2, **kwargs)))


def masked_lm(num_layers=4, hidden=32, seed=0, **kwargs):
    return _seeded(seed, lambda: BertForMaskedLM(bert_config(num_layers, hidden, **kwargs)))


def regressor(num_layers=4, hidden=32, seed=0, **kwargs):
    return _seeded(
        seed, lambda: BertForSequenceClassification(bert_config(num_layers, hidden, num_labels=1, **kwargs))
    )


def tiny_bert_config(num_layers=4, hidden=32, heads=4, **overrides):
    """The tiny BERT sequence classifier's config (labels negative / neutral / positive); `overrides` are set on it
    as attributes (so `vocab_size=120` or `num_labels=5` work as on a loaded config)."""
    config = bert_config(
        num_layers, hidden, heads, num_labels=3, id2label=dict(LABELS), label2id={v: k for k, v in LABELS.items()}
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_bert(num_layers=4, hidden=32, heads=4, seed=0, **overrides):
    """The suite's default model: a BERT sequence classifier over `VOCAB_SIZE` ids, initialised as BERT is."""
    return _seeded(
        seed, lambda: BertForSequenceClassification(tiny_bert_config(num_layers, hidden, heads, **overrides))
    )


def classifier(num_layers=4, hidden=32, seed=0, **kwargs):
    """The text-classification case's model: `tiny_bert` initialised wider than BERT's default, so that teacher and
    student disagree by more than float32 rounding."""
    return tiny_bert(num_layers, hidden, seed=seed, **{"initializer_range": 0.3, **kwargs})


def gpt2(num_layers=4, hidden=32, seed=0, vocab_size=VOCAB_SIZE, **overrides):
    config = family_config("gpt2", hidden=hidden, layers=num_layers, vocab_size=vocab_size, **overrides)
    return _seeded(seed, lambda: GPT2LMHeadModel(config))


def llama(num_layers=4, hidden=32, seed=0, vocab_size=VOCAB_SIZE, **overrides):
    config = family_config(
        "llama", hidden=hidden, layers=num_layers, vocab_size=vocab_size, tie_word_embeddings=False, **overrides
    )
    return _seeded(seed, lambda: LlamaForCausalLM(config))


# --- every supported family ------------------------------------------------------------------------------------------
# One tiny config per model type that `build_student` and the relation captures support: (config class, keyword
# arguments given hidden size h, layers n, heads a and key-value heads kv). Tests that need a variant (sliding windows,
# tied embeddings) pass it as an override.


def _encoder(h, n, a, kv):
    return dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=h,
        num_hidden_layers=n,
        num_attention_heads=a,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _decoder(h, n, a, kv):
    return dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=h,
        intermediate_size=48,
        num_hidden_layers=n,
        num_attention_heads=a,
        num_key_value_heads=kv,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


FAMILIES = {
    "bert": ("BertConfig", _encoder),
    "roberta": ("RobertaConfig", lambda *sizes: dict(_encoder(*sizes), pad_token_id=1)),
    "xlm-roberta": ("XLMRobertaConfig", lambda *sizes: dict(_encoder(*sizes), pad_token_id=1)),
    # embedding_size below the hidden size exercises embeddings_project, which sits outside the layers.
    "electra": ("ElectraConfig", lambda *sizes: dict(_encoder(*sizes), embedding_size=16)),
    "mpnet": ("MPNetConfig", lambda *sizes: dict(_encoder(*sizes), pad_token_id=1)),
    # Relative attention shared with the content projections: DeBERTa-v2 calls query_proj and key_proj twice a layer.
    "deberta-v2": (
        "DebertaV2Config",
        lambda *sizes: dict(
            _encoder(*sizes),
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            share_att_key=True,
            position_buckets=8,
            max_relative_positions=16,
        ),
    ),
    "distilbert": (
        "DistilBertConfig",
        lambda h, n, a, kv: dict(
            vocab_size=VOCAB_SIZE, dim=h, n_layers=n, n_heads=a, hidden_dim=37, dropout=0.0, attention_dropout=0.0
        ),
    ),
    "gpt2": (
        "GPT2Config",
        lambda h, n, a, kv: dict(
            vocab_size=VOCAB_SIZE,
            n_embd=h,
            n_layer=n,
            n_head=a,
            n_positions=64,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=2,
            eos_token_id=3,
        ),
    ),
    "llama": ("LlamaConfig", _decoder),
    "mistral": ("MistralConfig", _decoder),
    "qwen2": ("Qwen2Config", _decoder),
    "qwen3": ("Qwen3Config", lambda h, n, a, kv: dict(_decoder(h, n, a, kv), head_dim=h // a)),
}
DECODER_FAMILIES = frozenset({"gpt2", "llama", "mistral", "qwen2", "qwen3"})


def family_config(model_type, hidden=32, layers=4, heads=4, kv_heads=2, **overrides):
    """The tiny config of `model_type` (a key of `FAMILIES`) at the given sizes, with `overrides` on top."""
    import transformers

    config_name, kwargs = FAMILIES[model_type]
    return getattr(transformers, config_name)(**{**kwargs(hidden, layers, heads, kv_heads), **overrides})


# A byte-level BPE vocabulary for a GGUF file: one special token, the printable ASCII bytes, GPT-2's space byte "Ġ",
# and three merges; 99 tokens, the size of the other tiny models' vocabulary.
GGUF_TOKENS = ["<|endoftext|>", *(chr(c) for c in range(ord("!"), ord("~") + 1)), "Ġ", "he", "the", "Ġthe"]
GGUF_MERGES = ["h e", "t he", "Ġ the"]


def write_gguf(model: LlamaForCausalLM, path) -> str:
    """Writes a Llama model as a float32 GGUF file (llama.cpp's format), with a byte-level BPE tokenizer in its
    metadata, as llama.cpp's `convert_hf_to_gguf.py` lays it out: GGUF tensor names, and the query/key rows permuted
    the way transformers' GGUF loader un-permutes them. Returns the path."""
    import gguf
    import numpy as np

    def permute(weight, heads):
        return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2)

    config = model.config
    assert config.vocab_size == len(GGUF_TOKENS), "build the model with vocab_size=len(GGUF_TOKENS)"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(GGUF_TOKENS)
    writer.add_token_types([3] + [1] * (len(GGUF_TOKENS) - 1))  # 3: control token, 1: normal
    writer.add_token_merges(GGUF_MERGES)
    for special in (writer.add_bos_token_id, writer.add_eos_token_id, writer.add_pad_token_id):
        special(0)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for key, value in model.state_dict().items():
        module, _, kind = key.rpartition(".")
        array = value.detach().float().numpy()
        if module.endswith("q_proj"):
            array = permute(array, config.num_attention_heads).reshape(array.shape)
        elif module.endswith("k_proj"):
            array = permute(array, config.num_key_value_heads).reshape(array.shape)
        writer.add_tensor(f"{names.get_name(module)}.{kind}", np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def random_task_rows(task, n=12, seed=0, min_len=4, max_len=14):
    """Unpadded examples of `task` (hf_distill task name) with random token ids of random lengths."""
    g = torch.Generator().manual_seed(seed)

    def randint(low, high, size=()):
        return torch.randint(low, high, size, generator=g)

    rows = []
    for _ in range(n):
        length = int(randint(min_len, max_len + 1))
        ids = [2, *randint(5, VOCAB_SIZE, (length,)).tolist(), 3]
        row = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if task == "token-classification":
            # Special tokens and a share of "later sub-tokens" are -100.
            tags = randint(0, len(TAGS), (len(ids),)).tolist()
            ignored = (randint(0, 4, (len(ids),)) == 0).tolist()
            row["labels"] = [-100 if i in (0, len(ids) - 1) or ignored[i] else t for i, t in enumerate(tags)]
        elif task == "question-answering":
            start = int(randint(1, len(ids) - 1))
            row["start_positions"] = start
            row["end_positions"] = min(start + int(randint(0, 3)), len(ids) - 2)
        elif task == "masked-lm":
            masked = randint(0, 100, (len(ids),)) < 30
            masked[0] = masked[-1] = False
            masked[1 + int(randint(0, len(ids) - 2))] = True
            row["labels"] = [t if m else -100 for t, m in zip(ids, masked.tolist())]
            row["input_ids"] = [MASK_ID if m else t for t, m in zip(ids, masked.tolist())]
        elif task == "causal-lm":
            prompt = int(randint(0, 3))  # the first tokens are a prompt, not scored
            row["labels"] = [-100] * prompt + ids[prompt:]
        elif task == "regression":
            row["labels"] = float(torch.randn((), generator=g))
        elif task == "sequence-classification":
            row["labels"] = int(randint(0, len(LABELS)))
        rows.append(row)
    return rows


def pad_batch(features, pad_to=None):
    """Right-pads each list-valued key (input ids and mask with 0, labels with -100); stacks the scalars."""
    length = max(len(f["input_ids"]) for f in features)
    length = max(length, pad_to or 0)
    batch = {}
    for key in features[0]:
        values = [f[key] for f in features]
        if isinstance(values[0], list):
            fill = -100 if key == "labels" else 0
            batch[key] = torch.tensor([v + [fill] * (length - len(v)) for v in values])
        else:
            batch[key] = torch.tensor(values)
    return batch


def random_classification_dataset(n=32, seed=0, min_len=4, max_len=12):
    """`random_task_rows("sequence-classification", ...)` as a `Dataset`: ids of random lengths (so batches need
    padding), labels 0..2, no padding applied yet."""
    return Dataset.from_list(random_task_rows("sequence-classification", n, seed, min_len, max_len))


def pad_collate(features):
    """The collator of the classification tests: `pad_batch` (dynamic padding, as DataCollatorWithPadding does)."""
    return pad_batch(features)


def corpus_sentence(rng):
    """A sentence of a small weighted grammar over `WORDS`: a teacher learns clear next and masked tokens."""

    def pick(words, weights):
        return rng.choices(words.split(), weights)[0]

    words = [pick("the a", [3, 1]), pick("movie film day", [4, 2, 1])] if rng.random() < 0.7 else ["it"]
    words.append(pick("is was", [3, 1]))
    words += [pick("not very", [1, 3])] if rng.random() < 0.3 else []
    words.append(pick("good bad great awful fine okay", [12, 2, 1, 1, 1, 1]))
    return " ".join(words)


def write_corpus(path, count, seed=0):
    """A plain text file, one sentence a line."""
    rng = random.Random(seed)
    with open(path, "w") as handle:
        handle.write("".join(corpus_sentence(rng) + "\n" for _ in range(count)))
    return path


def task_rows(case_id: str, count: int, seed: int = 0) -> list[dict]:
    """Raw examples of a task case, as a user's data file holds them (columns named as the tasks expect)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        sentence = corpus_sentence(rng)
        if case_id == "text-classification":
            rows.append({"text": sentence, "sentiment": rng.choice(list(LABELS.values()))})
        elif case_id == "regression":
            rows.append({"text": sentence, "label": round(rng.uniform(0, 5), 2)})
        elif case_id == "token-classification":
            tokens = sentence.split()
            tags = ["B-PER" if word in ("movie", "film") else "O" for word in tokens]
            rows.append({"tokens": tokens, "ner_tags": tags})
        elif case_id == "question-answering":
            context = sentence
            answer = context.split()[-1]
            rows.append(
                {
                    "question": "how is it",
                    "context": context,
                    "answers": {"text": [answer], "answer_start": [context.rindex(answer)]},
                }
            )
        else:  # language models
            rows.append({"text": sentence})
    return rows


def write_task_file(case_id: str, path, count: int, seed: int = 0):
    """Writes `task_rows` to `path`: JSON Lines (.jsonl) or CSV (.csv, flat rows only)."""
    rows = task_rows(case_id, count, seed)
    with open(path, "w") as handle:
        if str(path).endswith(".csv"):
            columns = list(rows[0])
            handle.write(",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in rows))
        else:
            handle.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_sentiment_rows(path, count, seed=0, labels=("negative", "neutral", "positive")):
    """Writes `count` rows of random sentences over `CORE_WORDS` with a `sentiment` label, as CSV or JSON Lines by
    extension."""
    rng = random.Random(seed)
    rows = [
        {"text": " ".join(rng.choice(CORE_WORDS) for _ in range(rng.randint(3, 9))), "sentiment": rng.choice(labels)}
        for _ in range(count)
    ]
    with open(path, "w") as handle:
        if str(path).endswith(".csv"):
            handle.write("text,sentiment\n" + "".join(f"{r['text']},{r['sentiment']}\n" for r in rows))
        else:
            handle.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def split_card(card) -> tuple[dict, str]:
    """A model card (text or `ModelCard`) as (its YAML front matter, its body)."""
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", str(card), flags=re.S)
    assert match, "the card must start with a YAML front matter block"
    return yaml.safe_load(match.group(1)), match.group(2)


def table_rows(body: str) -> dict[str, list[str]]:
    """The rows of the card's Markdown tables: {first cell: the other cells}."""
    rows = {}
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


# ---- trainer settings ---------------------------------------------------------------------------------------------

# Every distillation term that works on any pair of the table, at weights that make each one count.
ALL_TERMS = {
    "kd_weight": 1.0,
    "label_weight": 0.5,
    "logit_mse_weight": 0.3,
    "hidden_weight": 2.0,
    "attention_weight": 1.0,
}
# Plain SGD at a constant rate, nothing else: the parameter change of a step is exactly -lr times its gradient, so a
# student after a few steps shows any difference in the losses or their normalisation.
SGD = {
    "optim": "sgd",
    "learning_rate": 1.0,
    "lr_scheduler_type": "constant",
    "weight_decay": 0.0,
    "max_grad_norm": 0.0,
}


def make_config(tmp_path, **overrides):
    """A `DistillationConfig` for a short, seeded CPU run writing to `tmp_path / "out"`."""
    from hf_distill import DistillationConfig

    settings = {
        "output_dir": str(tmp_path / "out"),
        "report_to": "none",
        "use_cpu": True,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "max_steps": 4,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        "disable_tqdm": True,
        **overrides,
    }
    return DistillationConfig(**settings)


def make_trainer(tmp_path, student, teacher, dataset=None, data_collator=pad_collate, **overrides):
    """A `DistillationTrainer` of `make_config(tmp_path, **overrides)`, training and evaluating on `dataset` (default:
    32 random classification rows)."""
    from hf_distill import DistillationTrainer

    dataset = dataset if dataset is not None else random_classification_dataset(32)
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_config(tmp_path, **overrides),
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=data_collator,
    )


def trainable_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


# ---- the table of task cases --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskCase:
    """One row of the task table.

    Args:
        id: the case's test id (a task may have several cases: causal LM with GPT-2 and Llama, classification and
            regression).
        task: the registered task name.
        build: the model factory: `build(num_layers=4, hidden=32, seed=0, vocab_size=VOCAB_SIZE)`.
        rows: the `random_task_rows` kind of its tokenised batches.
        metric_keys: the keys its evaluation's `compute_metrics` returns.
        is_regression: a regression head.
        card_keys: the metrics its model card shows, headline first (what issue 12 asks of each task).
        card_rows: the labels of those rows in the card's table.
        model_index_types: the metric types of its `model-index` entry.
        transfer_set: whether its command-line run is given an unlabelled transfer file (`--unlabeled_file`).
    """

    id: str
    task: str
    build: Callable
    rows: str
    metric_keys: tuple[str, ...]
    is_regression: bool = False
    card_keys: tuple[str, ...] = ()
    card_rows: tuple[str, ...] = ()
    model_index_types: frozenset[str] = frozenset()
    transfer_set: bool = False

    def pair(self, student_hidden: int = 32, **kwargs):
        """(student, teacher): a 2-layer student of width `student_hidden`, a 4-layer teacher."""
        return self.build(num_layers=2, hidden=student_hidden, seed=1, **kwargs), self.build(
            num_layers=4, seed=0, **kwargs
        )

    def cross_pair(self, student_hidden: int = 32, student_pieces: bool = False):
        """(student, teacher, student tokenizer, teacher tokenizer) of two vocabularies: the student reads the words
        of `tiny_tokenizer()`, the teacher the pieces of `word_piece_tokenizer()` (`movie` -> `mo ##vie`), or the
        other way round with `student_pieces`. Both are initialised wider than the default, so that their
        distributions are far from uniform (near-uniform distributions over two vocabularies give the
        sorted-probability losses no gradient)."""
        student_tokenizer, teacher_tokenizer = tiny_tokenizer(), word_piece_tokenizer()
        if student_pieces:
            student_tokenizer, teacher_tokenizer = teacher_tokenizer, student_tokenizer
        wide = {"initializer_range": 0.3}
        student = self.build(num_layers=2, hidden=student_hidden, seed=1, vocab_size=len(student_tokenizer), **wide)
        teacher = self.build(num_layers=4, seed=0, vocab_size=len(teacher_tokenizer), **wide)
        return student, teacher, student_tokenizer, teacher_tokenizer

    def __str__(self) -> str:
        return self.id


_LM_CARD = {
    "card_keys": ("perplexity", "accuracy"),
    "card_rows": ("Perplexity",),
    "model_index_types": frozenset({"perplexity", "accuracy"}),
}
CASES = (
    TaskCase(
        "text-classification",
        "sequence-classification",
        classifier,
        "sequence-classification",
        ("accuracy", "macro_f1"),
        card_keys=("accuracy", "macro_f1"),
        card_rows=("Accuracy", "Macro-F1"),
        model_index_types=frozenset({"accuracy", "f1"}),
        transfer_set=True,
    ),
    TaskCase(
        "regression",
        "sequence-classification",
        regressor,
        "regression",
        ("mse", "pearson"),
        True,
        card_keys=("mse", "pearson"),
        card_rows=("MSE", "Pearson correlation"),
        model_index_types=frozenset({"mse", "pearsonr"}),
    ),
    TaskCase(
        "token-classification",
        "token-classification",
        token_classifier,
        "token-classification",
        ("precision", "recall", "f1", "accuracy"),
        card_keys=("f1", "precision", "recall", "accuracy"),
        card_rows=("Entity F1", "Entity precision", "Entity recall"),
        model_index_types=frozenset({"f1", "precision", "recall", "accuracy"}),
    ),
    TaskCase(
        "question-answering",
        "question-answering",
        question_answerer,
        "question-answering",
        ("exact_match", "f1"),
        card_keys=("exact_match", "f1"),
        card_rows=("Exact match", "F1"),
        model_index_types=frozenset({"exact_match", "f1"}),
    ),
    TaskCase(
        "masked-lm", "masked-lm", masked_lm, "masked-lm", ("perplexity", "accuracy"), **_LM_CARD, transfer_set=True
    ),
    TaskCase(
        "causal-lm-gpt2", "causal-lm", gpt2, "causal-lm", ("perplexity", "accuracy"), **_LM_CARD, transfer_set=True
    ),
    TaskCase("causal-lm-llama", "causal-lm", llama, "causal-lm", ("perplexity", "accuracy"), **_LM_CARD),
)
CASE_IDS = [case.id for case in CASES]
# One case per task (the first of each), for tests about what a task owns rather than about a model family.
ONE_CASE_PER_DATA = [case for case in CASES if case.id != "causal-lm-llama"]


def case(case_id: str) -> TaskCase:
    return next(c for c in CASES if c.id == case_id)


# ---- saved teachers and data files, for the command and run_distillation


def save_teacher(folder, task_case):
    tokenizer = tiny_tokenizer()
    task_case.build(num_layers=4, vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def data_files(tmp_path, task_case):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    files = {
        "train_file": str(write_task_file(task_case.id, data / "train.jsonl", 40, seed=1)),
        "validation_file": str(write_task_file(task_case.id, data / "validation.jsonl", 12, seed=2)),
        "test_file": str(write_task_file(task_case.id, data / "test.jsonl", 10, seed=3)),
    }
    if task_case.transfer_set:  # texts without labels, none of them in the evaluation data (which would drop it)
        rng = random.Random(4)
        rows = [{"text": " ".join(rng.choice(CORE_WORDS) for _ in range(8))} for _ in range(8)]
        (data / "unlabeled.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        files["unlabeled_file"] = str(data / "unlabeled.jsonl")
    return files


def paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher, **data_overrides):
    """The task case's data files (`data_files`) tokenised by both tokenizers, as the run path prepares them for a
    student of another tokenizer: `prepare_datasets(..., teacher_tokenizer=...)`."""
    from hf_distill.data import DataArguments, load_raw_datasets
    from hf_distill.tasks import task_for

    data_args = DataArguments(**data_files(tmp_path, task_case), **data_overrides)
    return task_for(teacher).prepare_datasets(
        load_raw_datasets(data_args), student_tokenizer, data_args, None, teacher.config, teacher_tokenizer
    )


def train_flags(tmp_path, teacher, task_case, output="student"):
    """The flags of a short `hf-distill train` run of `task_case` on its data files (`data_files`)."""
    flags = ["--teacher_model_name_or_path", str(teacher), "--output_dir", str(tmp_path / output)]
    for name, path in data_files(tmp_path, task_case).items():
        flags += [f"--{name}", path]
    return flags + [
        *("--max_steps", "3", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3"),
        *("--report_to", "none", "--use_cpu", "--save_strategy", "no", "--disable_tqdm", "true"),
        *("--latency_batch_size", "2", "--latency_sequence_length", "8"),
    ]


def save_cross_pair(tmp_path, task_case):
    """A saved teacher of `task_case` reading `word_piece_tokenizer()`, and a saved pretrained student with a tokenizer
    of its own (`tiny_tokenizer()`): a bare encoder for the encoder tasks (it gets the task's head with the
    teacher's labels), a causal LM for causal LMs. Returns (teacher folder, student folder)."""
    teacher_tokenizer, student_tokenizer = word_piece_tokenizer(), tiny_tokenizer()
    teacher_folder, student_folder = tmp_path / "teacher", tmp_path / "pretrained-student"
    task_case.build(num_layers=4, vocab_size=len(teacher_tokenizer)).save_pretrained(teacher_folder)
    teacher_tokenizer.save_pretrained(teacher_folder)
    if task_case.task == "causal-lm":
        student = task_case.build(num_layers=2, seed=1, vocab_size=len(student_tokenizer))
    else:
        student = _seeded(1, lambda: BertModel(bert_config(2, vocab_size=len(student_tokenizer))))
    student.save_pretrained(student_folder)
    student_tokenizer.save_pretrained(student_folder)
    return teacher_folder, student_folder


# ---- what `make demo` leaves behind, at toy size ------------------------------------------------------------------

# The demo teacher's shape (6 layers, 12 heads, 1,536 feed-forward neurons, 3 labels), so that commands written for
# it (`--student_layers 0,2,4`, `--relation_heads 12`, `--student_intermediate_size 768`) run as written; 48 wide and
# with the word tokenizer's vocabulary, so that they run in seconds.
DEMO_TEACHER_SHAPE = {"num_layers": 6, "hidden": 48, "heads": 12, "intermediate_size": 1536}
DEMO_SPLIT_SIZES = {"train": 24, "validation": 8, "test": 16}


def write_demo_output(folder) -> dict:
    """Writes `<folder>/demo-output/teacher` (a saved tiny classifier of the demo teacher's shape, with its tokenizer)
    and `<folder>/demo-output/data/{train,validation,test,unlabeled}.csv` (sentences of `CORE_WORDS` labelled
    negative / neutral / positive in a `sentiment` column; `unlabeled.csv` has the `text` column only), as the recipe
    `tweets` expects them. Returns the paths."""
    from pathlib import Path

    root = Path(folder) / "demo-output"
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    shape = DEMO_TEACHER_SHAPE
    teacher = tiny_bert(
        shape["num_layers"],
        shape["hidden"],
        shape["heads"],
        vocab_size=len(tokenizer),
        intermediate_size=shape["intermediate_size"],
    )
    teacher.save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    paths = {"teacher": str(root / "teacher")}
    for seed, (split, count) in enumerate(DEMO_SPLIT_SIZES.items(), start=1):
        paths[split] = str(write_sentiment_rows(data / f"{split}.csv", count, seed=seed))
    rng = random.Random(len(DEMO_SPLIT_SIZES) + 1)
    texts = [" ".join(rng.choice(CORE_WORDS) for _ in range(8)) for _ in range(12)]
    (data / "unlabeled.csv").write_text("text\n" + "".join(text + "\n" for text in texts))
    paths["unlabeled"] = str(data / "unlabeled.csv")
    return paths
