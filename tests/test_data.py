"""Loading local files (`hf_distill.data`), and text classification's column detection, label mapping and
tokenization (`hf_distill.tasks.text_classification`); bad input gives an error that names the file, row and fix."""

import os

# No network: everything below uses files written to tmp_path and an in-process tokenizer.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import logging  # noqa: E402

import datasets  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from datasets import DatasetDict, concatenate_datasets  # noqa: E402
from tiny_task_models import WORDS, tiny_tokenizer  # noqa: E402
from transformers import HfArgumentParser, PretrainedConfig  # noqa: E402

from hf_distill.data import DataArguments, load_raw_datasets  # noqa: E402
from hf_distill.tasks import is_default_id2label  # noqa: E402
from hf_distill.tasks.text_classification import (  # noqa: E402
    SequenceClassification,
    TextClassificationArguments,
    build_label_mapping,
    resolve_columns,
    tokenize_datasets,
)

TEACHER_ID2LABEL = {0: "negative", 1: "neutral", 2: "positive"}

TRAIN_ROWS = [
    ("good movie", "positive"),
    ("bad movie", "negative"),
    ("ok film", "neutral"),
    ("great plot", "positive"),
    ("awful actors", "negative"),
    ("fine music", "neutral"),
]
VALIDATION_ROWS = [("loved it", "positive"), ("hated it", "negative"), ("it was ok", "neutral")]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(WORDS)


def prepare_text_classification(args, tokenizer, id2label=None, label_column=None, teacher_config=None):
    """What the run path does for text classification: load, then let the task prepare; and the label mapping."""
    raw = load_raw_datasets(args)
    task_args = TextClassificationArguments(label_column=label_column)
    if teacher_config is None and id2label is not None:
        teacher_config = PretrainedConfig(id2label=id2label)
    tokenized = SequenceClassification().prepare_datasets(raw, tokenizer, args, task_args, teacher_config)
    labelled = DatasetDict({name: split for name, split in raw.items() if name != "unlabeled"})
    _, _, label_column = resolve_columns(labelled, args, task_args)
    if teacher_config is not None and teacher_config.num_labels == 1:
        return tokenized, None
    return tokenized, build_label_mapping(labelled, label_column, id2label)


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keeps the `datasets` cache of each test in its own folder (read at `load_dataset` time, not import time)."""
    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def write_table(path, rows, columns=("text", "sentiment")):
    """Writes `rows` to `path` in the format given by its extension."""
    frame = pd.DataFrame(list(rows), columns=list(columns))
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        raise AssertionError(suffix)
    return str(path)


def token_ids(tokenizer, *texts):
    """Expected input_ids of an example: [CLS] text [SEP] (text_pair [SEP])."""
    return tokenizer(*texts)["input_ids"]


# ---------------------------------------------------------------------------------------------------------------------
# Loading and tokenizing local files
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "train_ext, validation_ext",
    [(".csv", ".csv"), (".jsonl", ".jsonl"), (".parquet", ".parquet"), (".csv", ".jsonl")],
    ids=["csv", "jsonl", "parquet", "mixed"],
)
def test_local_files_load_and_tokenize_with_teacher_labels(tmp_path, tokenizer, train_ext, validation_ext):
    args = DataArguments(
        train_file=write_table(tmp_path / f"train{train_ext}", TRAIN_ROWS),
        validation_file=write_table(tmp_path / f"validation{validation_ext}", VALIDATION_ROWS),
    )
    tokenized, label2id = prepare_text_classification(args, tokenizer, id2label=TEACHER_ID2LABEL)

    assert label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert list(tokenized) == ["train", "validation"]
    for split in tokenized.values():
        assert sorted(split.column_names) == ["attention_mask", "input_ids", "labels", "token_type_ids"]
    assert tokenized["train"]["labels"][:3] == [2, 0, 1]  # positive, negative, neutral
    assert tokenized["validation"]["labels"] == [2, 0, 1]
    assert tokenized["train"][0]["input_ids"] == token_ids(tokenizer, "good movie")
    assert tokenized["validation"][2]["input_ids"] == token_ids(tokenizer, "it was ok")
    assert tokenized["train"].num_rows == len(TRAIN_ROWS)


def test_text_pair_gives_two_segments(tmp_path, tokenizer):
    rows = [
        ("the cat sat on the mat", "the cat sleeps", "neutral"),
        ("the dog is outside", "the dog is inside", "negative"),
        ("sunny weather today", "it is sunny", "positive"),
    ]
    columns = ("premise", "hypothesis", "label")
    args = DataArguments(
        train_file=write_table(tmp_path / "train.csv", rows, columns),
        validation_file=write_table(tmp_path / "validation.csv", rows, columns),
        text_column="premise",
        text_pair_column="hypothesis",
    )
    tokenized, _ = prepare_text_classification(args, tokenizer, id2label=TEACHER_ID2LABEL)

    example = tokenized["train"][0]
    assert example["input_ids"].count(tokenizer.sep_token_id) == 2
    assert 1 in example["token_type_ids"]
    assert example["input_ids"] == token_ids(tokenizer, "the cat sat on the mat", "the cat sleeps")
    assert tokenized["train"]["labels"] == [1, 0, 2]


def test_truncation_without_padding(tmp_path, tokenizer):
    rows = [("the movie was very very very good", "positive"), ("bad", "negative")]
    args = DataArguments(
        train_file=write_table(tmp_path / "train.jsonl", rows),
        validation_file=write_table(tmp_path / "validation.jsonl", rows),
        max_length=5,
    )
    tokenized, _ = prepare_text_classification(args, tokenizer, id2label=TEACHER_ID2LABEL)
    lengths = [len(ids) for ids in tokenized["train"]["input_ids"]]
    assert lengths == [5, 3]  # truncated to max_length; the short one is not padded
    assert tokenized["train"][0]["input_ids"][-1] == tokenizer.sep_token_id


def test_csv_keeps_na_like_texts(tmp_path, tokenizer):
    # pandas would turn these into NaN by default; they are legitimate texts.
    rows = [("NA", "neutral"), ("null", "neutral"), ("good", "positive")]
    args = DataArguments(
        train_file=write_table(tmp_path / "train.csv", rows),
        validation_file=write_table(tmp_path / "validation.csv", rows),
    )
    raw = load_raw_datasets(args)
    assert list(raw["train"]["text"]) == ["NA", "null", "good"]


def test_tokenization_is_cached_by_fingerprint(tmp_path, tokenizer):
    args = DataArguments(
        train_file=write_table(tmp_path / "train.csv", TRAIN_ROWS),
        validation_file=write_table(tmp_path / "validation.csv", VALIDATION_ROWS),
    )
    first, _ = prepare_text_classification(args, tokenizer, id2label=TEACHER_ID2LABEL)
    cache_file = first["train"].cache_files[0]["filename"]
    written = os.stat(cache_file).st_mtime_ns
    second, _ = prepare_text_classification(args, tokenizer, id2label=TEACHER_ID2LABEL)
    # Same fingerprint, so the second run reloads the tokenized file instead of writing it again.
    assert second["train"].cache_files == first["train"].cache_files
    assert os.stat(cache_file).st_mtime_ns == written
    assert second["train"]["input_ids"] == first["train"]["input_ids"]


# ---------------------------------------------------------------------------------------------------------------------
# Splits, duplicates and truncation
# ---------------------------------------------------------------------------------------------------------------------


def make_rows(count):
    return [
        (f"{WORDS[i % 20]} {WORDS[(i // 20) + 20]}", ["negative", "neutral", "positive"][i % 3]) for i in range(count)
    ]


def test_auto_split_sizes_and_seed(tmp_path):
    rows = make_rows(40)
    train_file = write_table(tmp_path / "train.csv", rows)

    raw = load_raw_datasets(DataArguments(train_file=train_file, validation_split_percentage=25, split_seed=1))
    again = load_raw_datasets(DataArguments(train_file=train_file, validation_split_percentage=25, split_seed=1))
    other_seed = load_raw_datasets(DataArguments(train_file=train_file, validation_split_percentage=25, split_seed=2))

    assert list(raw) == ["train", "validation"]
    assert (raw["train"].num_rows, raw["validation"].num_rows) == (30, 10)
    assert set(raw["train"]["text"]) | set(raw["validation"]["text"]) == {text for text, _ in rows}
    assert list(raw["validation"]["text"]) == list(again["validation"]["text"])
    assert list(raw["validation"]["text"]) != list(other_seed["validation"]["text"])


def test_drop_duplicates_before_split(tmp_path):
    unique_rows = make_rows(20)
    rows = unique_rows + unique_rows[:10] + unique_rows[:5]  # 35 rows, 20 distinct texts
    train_file = write_table(tmp_path / "train.jsonl", rows)

    kept = load_raw_datasets(DataArguments(train_file=train_file, validation_split_percentage=20))
    assert kept["train"].num_rows + kept["validation"].num_rows == 35

    raw = load_raw_datasets(DataArguments(train_file=train_file, validation_split_percentage=20, drop_duplicates=True))
    train_texts, validation_texts = list(raw["train"]["text"]), list(raw["validation"]["text"])
    assert len(train_texts) + len(validation_texts) == 20
    assert len(set(train_texts)) == len(train_texts)
    assert not set(train_texts) & set(validation_texts)


def test_drop_duplicates_across_given_files_and_text_pairs(tmp_path):
    columns = ("question", "answer", "label")
    train = [("a cat", "it sleeps", 0), ("a cat", "it sat", 1), ("a cat", "it sleeps", 0), ("a dog", "fun", 1)]
    validation = [("a cat", "it sat", 1), ("a dog", "not fun", 0), ("a dog", "not fun", 0)]
    args = DataArguments(
        train_file=write_table(tmp_path / "train.parquet", train, columns),
        validation_file=write_table(tmp_path / "validation.parquet", validation, columns),
        text_column="question",
        text_pair_column="answer",
        drop_duplicates=True,
    )
    raw = load_raw_datasets(args)
    # Only the exact (text, text pair) repeats go; the validation row seen in train goes too.
    assert list(zip(raw["train"]["question"], raw["train"]["answer"])) == [
        ("a cat", "it sleeps"),
        ("a cat", "it sat"),
        ("a dog", "fun"),
    ]
    assert list(raw["validation"]["answer"]) == ["not fun"]


def test_max_samples_and_test_file(tmp_path):
    args = DataArguments(
        train_file=write_table(tmp_path / "train.csv", make_rows(12)),
        validation_file=write_table(tmp_path / "validation.csv", make_rows(6)),
        test_file=write_table(tmp_path / "test.csv", make_rows(5)),
        max_train_samples=4,
        max_eval_samples=3,
    )
    raw = load_raw_datasets(args)
    assert {name: split.num_rows for name, split in raw.items()} == {"train": 4, "validation": 3, "test": 3}
    assert list(raw["train"]["text"]) == [text for text, _ in make_rows(4)]


def test_dataset_folder_uses_its_validation_split(tmp_path, tokenizer):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_table(folder / "train.csv", TRAIN_ROWS)
    write_table(folder / "validation.csv", VALIDATION_ROWS)
    tokenized, label2id = prepare_text_classification(DataArguments(dataset_name=str(folder)), tokenizer)
    assert {name: split.num_rows for name, split in tokenized.items()} == {"train": 6, "validation": 3}
    assert label2id == {"negative": 0, "neutral": 1, "positive": 2}  # sorted, no teacher

    with pytest.raises(ValueError, match=r"'dev' is not a split.*available splits: \['train', 'validation'\]"):
        load_raw_datasets(DataArguments(dataset_name=str(folder), eval_split="dev"))


# ---------------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------------


def dataset_dict(train_labels, validation_labels=None, feature=None):
    def make(labels):
        data = {"text": ["good"] * len(labels), "label": labels}
        features = None
        if feature is not None:
            features = datasets.Features({"text": datasets.Value("string"), "label": feature})
        return datasets.Dataset.from_dict(data, features=features)

    splits = {"train": make(train_labels)}
    if validation_labels is not None:
        splits["validation"] = make(validation_labels)
    return datasets.DatasetDict(splits)


@pytest.mark.parametrize(
    "train_labels, validation_labels, id2label, expected",
    [
        # Integer labels 0..n-1 without a teacher map to themselves.
        ([2, 0, 1, 1], [0], None, {"0": 0, "1": 1, "2": 2}),
        # Other integers are sorted and renumbered.
        ([5, 1, 5], [3], None, {"1": 0, "3": 1, "5": 2}),
        # Strings without a teacher: sorted.
        (["pos", "neg"], ["neg"], None, {"neg": 0, "pos": 1}),
        # Digit strings sort numerically, not as text.
        (["10", "2", "1"], None, None, {"1": 0, "2": 1, "10": 2}),
        # Placeholder names (LABEL_0, ...) are no teacher labels; integers in range are the teacher's ids.
        ([1, 0], [1], {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, {"0": 0, "1": 1, "2": 2}),
        # Teacher names: strings map by name, whatever their order in the data.
        (["positive", "negative"], ["neutral"], TEACHER_ID2LABEL, {"negative": 0, "neutral": 1, "positive": 2}),
        # Teacher names: integer labels that are valid ids are accepted as ids.
        ([0, 2], [1], TEACHER_ID2LABEL, {"negative": 0, "neutral": 1, "positive": 2}),
    ],
    ids=["ints-identity", "ints-sorted", "strings-sorted", "digit-strings", "default-id2label", "by-name", "ids"],
)
def test_build_label_mapping(train_labels, validation_labels, id2label, expected):
    data = dataset_dict(train_labels, validation_labels)
    assert build_label_mapping(data, "label", id2label) == expected


def test_integer_labels_without_teacher_map_to_themselves(tmp_path, tokenizer):
    rows = [("good", 2), ("bad", 0), ("ok", 1), ("fine", 1)]
    args = DataArguments(
        train_file=write_table(tmp_path / "train.jsonl", rows, ("text", "label")),
        validation_file=write_table(tmp_path / "validation.jsonl", rows[:2], ("text", "label")),
    )
    tokenized, label2id = prepare_text_classification(args, tokenizer)
    assert label2id == {"0": 0, "1": 1, "2": 2}
    assert tokenized["train"]["labels"] == [2, 0, 1, 1]
    assert tokenized["validation"]["labels"] == [2, 0]


def test_class_label_column_maps_by_name(tokenizer):
    # The dataset orders its classes differently from the teacher: the ids must follow the teacher.
    feature = datasets.ClassLabel(names=["positive", "negative", "neutral"])
    data = dataset_dict([0, 1, 2], [1], feature=feature)
    args = DataArguments(train_file="unused.csv")
    label2id = build_label_mapping(data, "label", TEACHER_ID2LABEL)
    tokenized = tokenize_datasets(data, tokenizer, args, "text", None, "label", label2id)
    assert tokenized["train"]["labels"] == [2, 0, 1]

    # Without a teacher the dataset's own class names are the mapping.
    assert build_label_mapping(data, "label", None) == {"positive": 0, "negative": 1, "neutral": 2}


def test_is_default_id2label():
    assert is_default_id2label(None)
    assert is_default_id2label({0: "LABEL_0", 1: "LABEL_1"})
    assert not is_default_id2label(TEACHER_ID2LABEL)
    assert not is_default_id2label({0: "LABEL_1", 1: "LABEL_0"})


# ---------------------------------------------------------------------------------------------------------------------
# Errors name the problem
# ---------------------------------------------------------------------------------------------------------------------


def test_resolve_columns_auto_detection():
    data = dataset_dict(["pos"])
    assert resolve_columns(data, DataArguments(train_file="x.csv")) == ("text", None, "label")
    frame = datasets.Dataset.from_dict({"Review": ["good"], "Sentiment": ["pos"], "id": [1]})
    assert resolve_columns(frame, DataArguments(train_file="x.csv")) == ("Review", None, "Sentiment")


@pytest.mark.parametrize(
    "columns, overrides, expected",
    [
        (("body", "label"), {}, ["--text_column", "'body'", "'text'"]),
        (("text", "label"), {"text_column": "body"}, ["'body'", "--text_column", "['text', 'label']"]),
        (("text", "label"), {"text_pair_column": "hypothesis"}, ["'hypothesis'", "--text_pair_column"]),
        (("text", "stars"), {}, ["--label_column", "'stars'"]),
        (("text", "label"), {"label_column": "stars"}, ["'stars'", "--label_column"]),
    ],
    ids=["no-text-column", "missing-text-column", "missing-pair-column", "no-label-column", "missing-label-column"],
)
def test_missing_column_errors(columns, overrides, expected):
    data = datasets.Dataset.from_dict({column: ["good"] for column in columns})
    task_args = TextClassificationArguments(label_column=overrides.pop("label_column", None))
    with pytest.raises(ValueError) as error:
        resolve_columns(data, DataArguments(train_file="x.csv", **overrides), task_args)
    for fragment in expected:
        assert fragment in str(error.value)


def test_unknown_label_error_names_value_column_and_known_labels(tmp_path, tokenizer):
    rows = [("good", "positive"), ("so so", "mixed")]
    args = DataArguments(
        train_file=write_table(tmp_path / "train.csv", rows),
        validation_file=write_table(tmp_path / "validation.csv", rows[:1]),
    )
    with pytest.raises(ValueError) as error:
        prepare_text_classification(args, tokenizer, id2label=TEACHER_ID2LABEL)
    message = str(error.value)
    assert "'mixed'" in message
    assert "'sentiment'" in message
    assert "['negative', 'neutral', 'positive']" in message


def test_integer_label_out_of_teacher_range():
    with pytest.raises(ValueError, match=r"label 3 in column 'label'.*\['negative', 'neutral', 'positive'\]"):
        build_label_mapping(dataset_dict([0, 3]), "label", TEACHER_ID2LABEL)


def test_more_labels_than_an_unnamed_teacher():
    with pytest.raises(ValueError, match="3 distinct labels.*only 2 outputs"):
        build_label_mapping(dataset_dict(["a", "b", "c"]), "label", {0: "LABEL_0", 1: "LABEL_1"})


def test_missing_label_value():
    with pytest.raises(ValueError, match="missing label in column 'label'"):
        build_label_mapping(dataset_dict(["a", None]), "label", None)


def test_nonexistent_file(tmp_path):
    train_file = write_table(tmp_path / "train.csv", TRAIN_ROWS)
    missing = str(tmp_path / "nope" / "validation.csv")
    with pytest.raises(FileNotFoundError) as error:
        load_raw_datasets(DataArguments(train_file=train_file, validation_file=missing))
    assert "--validation_file" in str(error.value)
    assert missing in str(error.value)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "train.xlsx"
    path.write_text("good movie\n")
    with pytest.raises(ValueError, match=r"--train_file .*train\.xlsx.*unsupported extension '\.xlsx'.*\.csv"):
        DataArguments(train_file=str(path))


@pytest.mark.parametrize("extension", [".csv", ".jsonl", ".parquet"])
def test_empty_file(tmp_path, extension):
    train_file = write_table(tmp_path / "train.csv", TRAIN_ROWS)
    empty = tmp_path / f"validation{extension}"
    write_table(empty, [])  # CSV: header only; JSON Lines: no line; Parquet: 0 rows
    with pytest.raises(ValueError) as error:
        load_raw_datasets(DataArguments(train_file=train_file, validation_file=str(empty)))
    assert "--validation_file" in str(error.value)
    assert str(empty) in str(error.value)
    assert "empty" in str(error.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "neither was given"),
        ({"dataset_name": "imdb", "train_file": "train.csv"}, "both were given"),
        (
            {"train_file": "train.csv", "validation_split_percentage": 100},
            "between 1 and 99.*or 0 to hold out nothing",
        ),
        ({"train_file": "train.csv", "validation_split_percentage": -1}, "validation_split_percentage"),
        ({"train_file": "train.csv", "max_train_samples": 0}, "max_train_samples"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataArguments(**kwargs)


def test_hf_argument_parser_flags():
    parser = HfArgumentParser(DataArguments)
    (args,) = parser.parse_args_into_dataclasses(
        ["--train_file", "train.csv", "--text_pair_column", "hypothesis", "--drop_duplicates", "--max_length", "64"]
    )
    assert (args.train_file, args.text_pair_column, args.drop_duplicates, args.max_length) == (
        "train.csv",
        "hypothesis",
        True,
        64,
    )
    assert args.eval_split is None and args.validation_split_percentage == 10 and args.split_seed == 42
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no help"


def test_unlabeled_transfer_set_joins_training_with_ignored_labels(tmp_path, tokenizer):
    train = write_table(tmp_path / "train.csv", [("good movie", "positive"), ("bad movie", "negative")])
    test = write_table(tmp_path / "test.csv", [("it was good", "positive")])
    unlabeled = tmp_path / "unlabeled.csv"
    unlabeled.write_text("text\nit was not good\nvery bad\nit was good\n")  # the last one is a test text
    args = DataArguments(
        train_file=str(train), validation_file=str(test), test_file=str(test), unlabeled_file=str(unlabeled)
    )
    tokenized, _ = prepare_text_classification(args, tokenizer, id2label={0: "negative", 1: "neutral", 2: "positive"})
    # Labelled and unlabelled examples are counted apart; the run path trains on both.
    assert (tokenized["train"].num_rows, tokenized["unlabeled"].num_rows) == (2, 2)  # the test text was dropped
    training = concatenate_datasets([tokenized["train"], tokenized["unlabeled"]])
    assert list(training["labels"]) == [2, 0, -100, -100]
    assert tokenized["train"].column_names == tokenized["test"].column_names == tokenized["unlabeled"].column_names


def test_unlabeled_file_without_the_text_column_is_named(tmp_path, tokenizer):
    train = write_table(tmp_path / "train.csv", [("good movie", "positive"), ("bad movie", "negative")])
    unlabeled = tmp_path / "unlabeled.csv"
    unlabeled.write_text("tweet\nvery bad\n")
    args = DataArguments(train_file=str(train), validation_file=str(train), unlabeled_file=str(unlabeled))
    with pytest.raises(ValueError, match="--unlabeled_file .* has no column 'text'"):
        prepare_text_classification(args, tokenizer, id2label={0: "negative", 1: "neutral", 2: "positive"})


def test_plain_text_files_load_one_example_per_line(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the first line\nthe second line\n")
    raw = load_raw_datasets(DataArguments(train_file=str(corpus), validation_file=str(corpus)))
    assert list(raw["train"]["text"]) == ["the first line", "the second line"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="--train_file .*empty.txt.* is empty"):
        load_raw_datasets(DataArguments(train_file=str(tmp_path / "empty.txt"), validation_file=str(corpus)))


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the input and the fix, and nothing lost (issue 13)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", [".csv", ".jsonl"])
def test_an_empty_text_cell_is_refused_like_a_json_null(tmp_path, extension):
    # Before: the CSV's empty cell trained on "" while the JSON Lines null was refused without naming the file.
    path = tmp_path / f"train{extension}"
    if extension == ".csv":
        path.write_text('text,sentiment\ngood movie,positive\n"",negative\nbad film,negative\n')
        where = r"row 2 \(line 3 of the file, after the header\)"
    else:
        path.write_text('{"text": "good movie", "sentiment": "positive"}\n{"text": null, "sentiment": "negative"}\n')
        where = r"row 2 \(line 2\)"
    with pytest.raises(ValueError, match=rf"--train_file '.*{path.name}': {where} has no text in column 'text'.*Fill"):
        load_raw_datasets(DataArguments(train_file=str(path), validation_split_percentage=0))


def test_evaluation_texts_seen_in_training_are_counted_in_a_warning(tmp_path, caplog):
    train = write_table(tmp_path / "train.csv", TRAIN_ROWS)
    test = write_table(tmp_path / "test.csv", TRAIN_ROWS[:2] + VALIDATION_ROWS)  # 2 of 5 are training rows
    args = DataArguments(train_file=train, validation_file=test, test_file=test)
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        raw = load_raw_datasets(args)
    warnings = [r.getMessage() for r in caplog.records if "also appear in the training data" in r.getMessage()]
    assert len(warnings) == 2 and all(w.startswith("2 of 5") for w in warnings), warnings
    assert "--test_file" in warnings[1] and "--drop_duplicates" in warnings[1]
    assert raw["test"].num_rows == 5  # a warning: nothing is dropped unless asked
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        load_raw_datasets(DataArguments(train_file=train, validation_file=test, drop_duplicates=True))
    assert not [r for r in caplog.records if "also appear" in r.getMessage()]


def test_a_non_utf8_csv_names_the_file_the_line_and_the_fix(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("text,sentiment\ngood movie,positive\ncaf\xe9 film,negative\n".encode("latin-1"))
    with pytest.raises(ValueError) as error:
        load_raw_datasets(DataArguments(train_file=str(path), validation_split_percentage=0))
    message = str(error.value)
    assert str(path) in message and "not UTF-8" in message and "line 3" in message and "0xe9" in message
    assert "Re-save the file as UTF-8" in message
    assert error.value.__cause__ is not None  # raised from the datasets / pandas error, which stays in the traceback


def test_a_broken_json_line_names_the_file_the_line_and_the_fix(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "good movie", "sentiment": "positive"}\n\n{"text": "bad", sentiment: "negative"}\n')
    with pytest.raises(ValueError, match=r"--train_file '.*train.jsonl': line 3 is not valid JSON .*fix or delete"):
        load_raw_datasets(DataArguments(train_file=str(path), validation_split_percentage=0))


def test_list_labels_in_parquet_name_the_file_the_row_and_the_fix(tmp_path, tokenizer):
    path = tmp_path / "train.parquet"
    pd.DataFrame({"text": ["good movie", "bad film"], "label": [[2], [0, 1]]}).to_parquet(path)
    args = DataArguments(train_file=str(path), validation_split_percentage=0)
    with pytest.raises(
        ValueError, match=r"--train_file '.*train.parquet': row 1 holds the list \[2\] in label column"
    ):
        prepare_text_classification(args, tokenizer, id2label=TEACHER_ID2LABEL)


@pytest.mark.parametrize("split_seed", range(4))
@pytest.mark.parametrize(
    "extra", [{}, {"drop_duplicates": True}, {"max_train_samples": 30}], ids=["plain", "dedup", "max"]
)
def test_a_bad_target_names_the_files_first_bad_row_whatever_the_split(tmp_path, tokenizer, split_seed, extra):
    """The first data rows hold 'low' and 'mid': the error names row 1 of the file whichever split (shuffled, held
    out, duplicates dropped, truncated) they went to. It used to say "row 1 has the target 'mid'" (the split's row)."""
    rows = [(f"{WORDS[0]} {WORDS[1]}", 0.5)] * 3  # duplicates before the bad rows: dropping them shifts the rows
    rows += [("first", "low"), ("second", "mid")] + [(f"{WORDS[i % 20]} {WORDS[20 + i // 20]}", i) for i in range(35)]
    args = DataArguments(
        train_file=write_table(tmp_path / "train.csv", rows, ("text", "label")),
        validation_split_percentage=20,
        split_seed=split_seed,
        **extra,
    )
    raw = load_raw_datasets(args)
    where = {split: "low" in raw[split]["label"] for split in raw}
    with pytest.raises(ValueError) as error:
        SequenceClassification().prepare_datasets(raw, tokenizer, args, None, PretrainedConfig(num_labels=1))
    assert str(error.value).startswith(
        "--train_file '" + args.train_file + "': row 4 (line 5 of the file, after the header) has the target 'low' "
        "in column 'label' (2 row(s) in all are not numbers)"
    ), (where, str(error.value))


def test_validation_split_percentage_zero_trains_on_every_example(tmp_path):
    rows = make_rows(20)
    train = write_table(tmp_path / "train.csv", rows)
    test = write_table(tmp_path / "test.csv", make_rows(25)[20:])
    raw = load_raw_datasets(DataArguments(train_file=train, test_file=test, validation_split_percentage=0))
    assert list(raw) == ["train", "test"] and raw["train"].num_rows == 20  # evaluation uses the test file
    raw = load_raw_datasets(DataArguments(train_file=train, validation_split_percentage=0))
    assert list(raw) == ["train"]  # no evaluation data at all
    default = load_raw_datasets(DataArguments(train_file=train, test_file=test))
    assert (default["train"].num_rows, default["validation"].num_rows) == (18, 2)  # 10% held out, as before


def test_a_regression_teacher_takes_real_valued_targets(tmp_path, tokenizer):
    # Before: refused with "Column 'label' has 40 distinct labels ... but the teacher has only 1 outputs".
    rows = [(f"{WORDS[i % 20]} {WORDS[20 + i // 20]}", round(0.1 * i, 2)) for i in range(40)]
    args = DataArguments(
        train_file=write_table(tmp_path / "train.csv", rows, ("text", "label")),
        validation_file=write_table(tmp_path / "validation.csv", rows[:5], ("text", "label")),
    )
    regression_teacher = PretrainedConfig(num_labels=1)
    tokenized, _ = prepare_text_classification(args, tokenizer, teacher_config=regression_teacher)
    assert tokenized["train"]["labels"][:3] == pytest.approx([0.0, 0.1, 0.2])
    assert tokenized["train"].features["labels"].dtype.startswith("float")

    bad = write_table(tmp_path / "bad.csv", [("good", 1.5), ("bad", "high")], ("text", "label"))
    with pytest.raises(
        ValueError,
        match=r"--train_file '.*bad.csv': row 2 \(line 3 of the file, after the header\) has the target 'high'.*must "
        r"be a number",
    ):
        prepare_text_classification(
            DataArguments(train_file=bad, validation_split_percentage=0), tokenizer, teacher_config=regression_teacher
        )
