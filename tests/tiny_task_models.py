"""Tiny models of each task head, random data for them, and a padding collator: for tests/test_tasks*.py."""

import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

VOCAB_SIZE = 99
MASK_ID = 4
TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def bert_config(num_layers=4, hidden=32, heads=4, vocab_size=VOCAB_SIZE, **kwargs):
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **kwargs,
    )


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


def regressor(num_layers=4, hidden=32, seed=0):
    return _seeded(seed, lambda: BertForSequenceClassification(bert_config(num_layers, hidden, num_labels=1)))


def gpt2(num_layers=4, hidden=32, seed=0, vocab_size=VOCAB_SIZE):
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=hidden,
        n_layer=num_layers,
        n_head=4,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return _seeded(seed, lambda: GPT2LMHeadModel(config))


def llama(num_layers=4, hidden=32, seed=0, vocab_size=VOCAB_SIZE):
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=48,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return _seeded(seed, lambda: LlamaForCausalLM(config))


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


def corpus_sentence(rng):
    """A sentence of a small weighted grammar over conftest.WORDS: a teacher learns clear next and masked tokens."""

    def pick(words, weights):
        return rng.choices(words.split(), weights)[0]

    words = [pick("the a", [3, 1]), pick("movie film day", [4, 2, 1])] if rng.random() < 0.7 else ["it"]
    words.append(pick("is was", [3, 1]))
    words += [pick("not very", [1, 3])] if rng.random() < 0.3 else []
    words.append(pick("good bad great awful fine okay", [12, 2, 1, 1, 1, 1]))
    return " ".join(words)


def write_corpus(path, count, seed=0):
    """A plain text file, one sentence a line."""
    import random

    rng = random.Random(seed)
    with open(path, "w") as handle:
        handle.write("".join(corpus_sentence(rng) + "\n" for _ in range(count)))
    return path
