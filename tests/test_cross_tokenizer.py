"""A student of another tokenizer than its teacher's: each model reads its own tokenization of every example.

Detection (the vocabularies are compared, not their sizes), the paired data and batches, the soft targets of each
task against references computed from each model on its own unpadded tokens, gradient accumulation with uneven
lengths on both sides, the refusals, the same-tokenizer path left exactly as it was, and the command's student folder
(its own tokenizer, its card, `pipeline`)."""

import copy
import json
import math

import pytest
import torch
from datasets import Dataset, DatasetDict
from tiny_task_models import (
    CORE_WORDS,
    SGD,
    bert_config,
    case,
    make_config,
    make_trainer,
    paired_splits,
    random_classification_dataset,
    save_cross_pair,
    split_card,
    tiny_bert,
    tiny_tokenizer,
    train_flags,
    trainable_state,
    word_piece_tokenizer,
)
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertModel, pipeline

from hf_distill import CacheArguments, DistillationTrainer, build_teacher_cache, load_model
from hf_distill.alignment import shared_vocabulary, span_groups
from hf_distill.cli import main, run_command
from hf_distill.completions import decoded_spans, prompts_of
from hf_distill.cross_tokenizer import PairedCollator, teacher_inputs
from hf_distill.data import DataArguments
from hf_distill.model_card import METRICS_FILE
from hf_distill.tasks import CausalLM, task_for

pytestmark = pytest.mark.usefixtures("one_thread")


def cross_trainer(tmp_path, case_id, splits=None, student_hidden=32, student_pieces=False, **overrides):
    """A trainer of the case's cross pair (student: words, teacher: word pieces; or the other way round) on its
    paired data files."""
    task_case = case(case_id)
    student, teacher, student_tokenizer, teacher_tokenizer = task_case.cross_pair(student_hidden, student_pieces)
    if splits is None:
        splits = paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_config(tmp_path, **overrides),
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=task_for(teacher).data_collator(student_tokenizer),
        processing_class=student_tokenizer,
        teacher_processing_class=teacher_tokenizer,
    )
    return trainer, splits


# ---- sequence classification ---------------------------------------------------------------------------------------


def test_each_model_reads_its_own_tokens_and_the_terms_follow_their_formulas(tmp_path):
    """The evaluation's kd term equals the KL between the teacher on its own unpadded tokens and the student on its
    own, example by example (both sides padded with their own tokens, each model fed its own ids); the hidden-state
    term is the MSE between each side's hidden states averaged over its own tokens."""
    trainer, splits = cross_trainer(
        tmp_path, "text-classification", student_hidden=16, per_device_eval_batch_size=4, hidden_weight=1.0
    )
    assert isinstance(trainer.data_collator, PairedCollator)
    measured = trainer.evaluate()
    temperature, kd, hidden = trainer.args.temperature, 0.0, 0.0
    student, teacher = trainer.student.eval(), trainer.teacher
    pairs = list(zip(trainer.layer_map.hidden_state_indices(), trainer.model.projections))
    for row in splits["validation"]:
        with torch.no_grad():
            s = student(input_ids=torch.tensor([row["input_ids"]]), output_hidden_states=True)
            t = teacher(input_ids=torch.tensor([row["teacher_input_ids"]]), output_hidden_states=True)
            s_logits, t_logits = s.logits / temperature, t.logits / temperature
            kl = (t_logits.softmax(-1) * (t_logits.log_softmax(-1) - s_logits.log_softmax(-1))).sum()
            kd += temperature**2 * kl.item()
            # Each side's states averaged over its own tokens (the student's projected to the teacher's width), per
            # layer pair, averaged over the pairs.
            for (t_layer, s_layer), projection in pairs:
                pooled_s = projection(s.hidden_states[s_layer][0]).mean(0)
                error = (pooled_s - t.hidden_states[t_layer][0].mean(0)).pow(2).mean().item()
                hidden += error / len(pairs)
    assert measured["eval_loss_kd"] == pytest.approx(kd / len(splits["validation"]), rel=1e-5)
    assert measured["eval_loss_hidden"] == pytest.approx(hidden / len(splits["validation"]), rel=1e-5)


def sgd_update(tmp_path, case_id, batch_size, accumulation, rows=16, **terms):
    """Minus the parameter change of one plain SGD step at lr 1 (the gradient) over the first `rows` paired rows."""
    task_case = case(case_id)
    student, teacher, student_tokenizer, teacher_tokenizer = task_case.cross_pair(student_hidden=16)
    splits = paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher)
    train = splits["train"].select(range(rows))
    trainer, _ = cross_trainer(
        tmp_path / f"{batch_size}x{accumulation}",
        case_id,
        splits={"train": train, "validation": splits["validation"]},
        student_hidden=16,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        train_sampling_strategy="sequential",
        **terms,
        **SGD,
    )
    before = trainable_state(trainer)
    trainer.train()
    return {k: before[k] - v for k, v in trainable_state(trainer).items()}, train


GA_CASES = [
    # (not the similarity loss: it relates the examples of one micro-batch, so it depends on the split by design)
    ("text-classification", {"kd_weight": 1.0, "label_weight": 0.5, "hidden_weight": 1.0}),
    ("causal-lm-gpt2", {"kd_weight": 1.0, "label_weight": 0.5, "cross_tokenizer_loss": "span"}),
    ("causal-lm-llama", {"kd_weight": 1.0, "label_weight": 0.5, "cross_tokenizer_loss": "uld"}),
    ("token-classification", {"kd_weight": 1.0, "label_weight": 0.5, "logit_mse_weight": 0.3}),
    ("question-answering", {"kd_weight": 1.0, "label_weight": 0.5, "hidden_weight": 1.0}),
]


@pytest.mark.parametrize(
    "case_id, terms", GA_CASES, ids=[f"{c}-{t.get('cross_tokenizer_loss', 'kd')}" for c, t in GA_CASES]
)
def test_accumulated_halves_give_the_update_of_the_whole_batch_across_tokenizers(tmp_path, case_id, terms):
    whole, rows = sgd_update(tmp_path, case_id, 16, 1, **terms)
    halves, _ = sgd_update(tmp_path, case_id, 8, 2, **terms)
    for side in ("input_ids", "teacher_input_ids"):  # uneven halves on both sides
        lengths = [len(ids) for ids in rows[side]]
        assert sum(lengths[:8]) != sum(lengths[8:]) and len(set(lengths)) > 1, side
    assert sum(d.abs().sum().item() for d in whole.values()) > 1e-3
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)


# ---- one tokenizer: the path of before -----------------------------------------------------------------------------


def test_the_same_tokenizer_given_twice_takes_the_path_of_before_bit_for_bit(tmp_path, monkeypatch):
    """A teacher tokenizer with the student's vocabulary changes nothing: no paired collator, no alignment, the same
    weights after four steps as a run given one tokenizer."""

    def never(*args, **kwargs):
        raise AssertionError("the two-tokenizer path ran for one tokenizer")

    monkeypatch.setattr(PairedCollator, "__call__", never)
    data = random_classification_dataset(32)
    runs = []
    for teacher_tokenizer in (None, tiny_tokenizer()):
        trainer = make_trainer(
            tmp_path / str(teacher_tokenizer is None), tiny_bert(2, seed=1), tiny_bert(4), data, hidden_weight=1.0
        )
        if teacher_tokenizer is not None:  # the same trainer, told the teacher's tokenizer
            trainer = DistillationTrainer(
                model=tiny_bert(2, seed=1),
                teacher_model=tiny_bert(4),
                args=make_config(tmp_path / "given", hidden_weight=1.0),
                train_dataset=data,
                eval_dataset=data,
                data_collator=trainer.data_collator,
                processing_class=tiny_tokenizer(),
                teacher_processing_class=teacher_tokenizer,
            )
            assert trainer.tokenizers is None and not isinstance(trainer.data_collator, PairedCollator)
        trainer.train()
        runs.append(trainer)
    for (name, a), b in zip(runs[0].student.named_parameters(), runs[1].student.parameters()):
        assert torch.equal(a, b), name
    assert runs[0].state.log_history[-2]["loss"] == runs[1].state.log_history[-2]["loss"]


# ---- what cannot cross, refused at start-up ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"attention_weight": 1.0},
            r"^attention_weight > 0 cannot cross tokenizers: it compares attention maps token by token, and the two "
            r"tokenizers' tokens differ \(the student's vocabulary differs from the teacher's: the teacher's has 32 "
            r"tokens, the student's 23 \(13 spelled alike\)\); set attention_weight=0",
        ),
        ({"relation_weight": 1.0}, r"^relation_weight > 0 cannot cross tokenizers: it compares attention relations"),
    ],
)
def test_loss_terms_that_compare_tokens_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        cross_trainer(tmp_path, "text-classification", **overrides)


@pytest.mark.parametrize(
    "case_id, overrides, message",
    [
        (
            "masked-lm",
            {},
            r"^the student's tokenizer differs from the teacher's \(the teacher's has 32 tokens, the student's 23 "
            r"\(13 spelled alike\)\), and masked-LM soft targets are the distributions at the masked tokens, and a "
            r"token the student's tokenizer masks hides another piece of text",
        ),
        (
            "causal-lm-gpt2",
            {"logit_mse_weight": 1.0},
            r"and the logit MSE \(logit_mse_weight > 0\) compares logits token by token over one vocabulary; set "
            r"logit_mse_weight=0",
        ),
    ],
)
def test_tasks_refuse_what_they_cannot_align(tmp_path, case_id, overrides, message):
    task_case = case(case_id)
    student, teacher, student_tokenizer, teacher_tokenizer = task_case.cross_pair()
    one = paired_splits(tmp_path, task_case, student_tokenizer, None, teacher)  # the student's tokenization only
    with pytest.raises(ValueError, match=message):
        cross_trainer(tmp_path, case_id, splits=one, **overrides)
    if case_id == "masked-lm":  # and tokenising for both is refused too
        with pytest.raises(ValueError, match="teacher_tokenizer is given .* but masked-LM soft targets"):
            paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher)


def test_data_of_one_tokenization_is_refused_naming_the_fix(tmp_path):
    task_case = case("text-classification")
    student, teacher, student_tokenizer, teacher_tokenizer = task_case.cross_pair()
    splits = paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher)
    one = splits["train"].remove_columns(["teacher_input_ids", "teacher_attention_mask", "teacher_token_type_ids"])
    with pytest.raises(ValueError, match=r"^train_dataset holds only one tokenization \(no teacher_input_ids\), but"):
        cross_trainer(tmp_path, "text-classification", splits={"train": one, "validation": splits["validation"]})


def test_a_teacher_tokenizer_needs_the_students(tmp_path):
    task_case = case("text-classification")
    student, teacher, _, teacher_tokenizer = task_case.cross_pair()
    with pytest.raises(ValueError, match="pass the student's as processing_class too"):
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=make_config(tmp_path),
            teacher_processing_class=teacher_tokenizer,
        )


def test_equal_sizes_with_other_tokens_are_detected(tmp_path):
    """A student saved with a tokenizer of the teacher's size but other ids: given the teacher's tokenizer alone, it
    would read ids it was not trained on; the trainer refuses it, and given both it takes the two-tokenizer path."""
    teacher_tokenizer, shuffled = tiny_tokenizer(), tiny_tokenizer(list(reversed(CORE_WORDS)))
    assert len(shuffled) == len(teacher_tokenizer)
    tiny_bert(2, seed=1, vocab_size=len(shuffled)).save_pretrained(tmp_path / "student")
    shuffled.save_pretrained(tmp_path / "student")
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    teacher = tiny_bert(4, vocab_size=len(teacher_tokenizer))
    with pytest.raises(
        ValueError,
        match=r"^the student '.*student' has a tokenizer of its own whose vocabulary "
        r"differs from processing_class's \(both have 23 tokens, but 18 differ: 'good' is id 5",
    ):
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=make_config(tmp_path),
            train_dataset=random_classification_dataset(8),
            processing_class=teacher_tokenizer,
        )
    with pytest.raises(ValueError, match="train_dataset holds only one tokenization"):  # the two-tokenizer path
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=make_config(tmp_path),
            train_dataset=random_classification_dataset(8),
            processing_class=shuffled,
            teacher_processing_class=teacher_tokenizer,
        )


# ---- the command: a pretrained student of another family ---------------------------------------------------------

COMMAND_CASES = ["text-classification", "token-classification", "question-answering", "causal-lm-gpt2"]


@pytest.mark.parametrize("case_id", COMMAND_CASES)
def test_a_pretrained_student_with_its_own_tokenizer_through_the_command(tmp_path, case_id):
    """`--student_model_name_or_path` of a pretrained model with another tokenizer: it learns through its own tokens,
    is saved with its own tokenizer, `pipeline` reads that one, the teacher is measured on its own tokenization, and
    the card names both tokenizers and the alignment."""
    task_case = case(case_id)
    teacher, pretrained = save_cross_pair(tmp_path, task_case)
    main(["train", *train_flags(tmp_path, teacher, task_case), "--student_model_name_or_path", str(pretrained)])
    folder = tmp_path / "student"

    task = task_for(teacher_model := load_model(str(teacher)))
    assert AutoTokenizer.from_pretrained(folder).get_vocab() == tiny_tokenizer().get_vocab()
    metrics = json.loads((folder / METRICS_FILE).read_text())
    tokenizers = metrics["distillation"]["tokenizers"]
    assert tokenizers["teacher"] == "teacher" and tokenizers["teacher_tokens"] == 32
    assert tokenizers["student"] == "pretrained-student" and tokenizers["student_tokens"] == 23
    assert tokenizers["alignment"] == task.cross_tokenizer_card(metrics_config(metrics))["alignment"]
    headline = task.card_metrics[0].key
    assert isinstance(metrics["teacher"][headline], float)  # measured on its own tokenization of the test examples
    assert metrics["teacher"]["parameters"] == teacher_model.num_parameters()
    _, body = split_card((folder / "README.md").read_text())
    assert (
        "- **Tokenizers:** the teacher reads `teacher` (32 tokens), the student its own, `pretrained-student` (23 "
        f"tokens), saved with it; {tokenizers['alignment']}." in body
    )


def metrics_config(metrics):
    """A config of the settings the metrics file records (what a task's card sentence reads)."""
    from hf_distill import DistillationConfig

    settings = metrics["distillation"]
    return DistillationConfig(output_dir="unused", temperature=settings["temperature"])


def test_a_pretrained_classifier_with_its_own_tokenizer_predicts_the_teachers_labels(tmp_path):
    """A base model gets the teacher's labels; `pipeline` on the saved student tokenises with the student's tokenizer
    (the prediction is the student's on those ids); the card describes the hidden-state loss across tokenizers."""
    task_case = case("text-classification")
    teacher, pretrained = save_cross_pair(tmp_path, task_case)
    flags = train_flags(tmp_path, teacher, task_case)
    main(["train", *flags, "--student_model_name_or_path", str(pretrained), "--hidden_weight", "1"])
    folder = tmp_path / "student"
    classifier = pipeline("text-classification", model=str(folder))
    text = "the movie was very good"
    with torch.no_grad():
        logits = classifier.model(**tiny_tokenizer()(text, return_tensors="pt")).logits[0]
    assert classifier(text)[0]["label"] == classifier.model.config.id2label[int(logits.argmax())]
    assert classifier.model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    metrics = json.loads((folder / METRICS_FILE).read_text())
    assert metrics["distillation"]["tokenizers"]["alignment"] == (
        "one prediction per example over the same labels, so the soft targets need no alignment"
    )
    _, body = split_card((folder / "README.md").read_text())
    assert "between each example's hidden states averaged over its own tokens (two tokenizers" in body


# ---- causal language models ----------------------------------------------------------------------------------------


def sorted_l1(p, q):
    width = max(len(p), len(q))
    p = torch.nn.functional.pad(p.sort(descending=True).values, (0, width - len(p)))
    q = torch.nn.functional.pad(q.sort(descending=True).values, (0, width - len(q)))
    return (p - q).abs().sum().item()


@pytest.mark.parametrize("method", ["span", "uld"])
def test_causal_lm_soft_targets_equal_their_formula_on_each_models_own_tokens(tmp_path, method):
    """The evaluation's kd term, from batches padded on both sides, equals the method's formula applied example by
    example to each model's logits on its own unpadded tokens: span alignment over the groups of text both tokenizers
    cut alike (merged spans' mass combined, shared tokens one to one, the rest sorted), ULD over the k-th predictions,
    summed and divided by the student's scored tokens."""
    trainer, splits = cross_trainer(
        tmp_path, "causal-lm-gpt2", cross_tokenizer_loss=method, temperature=1.5, per_device_eval_batch_size=4
    )
    measured = trainer.evaluate()["eval_loss_kd"]
    pair, student, teacher = trainer.tokenizers, trainer.student.eval(), trainer.teacher
    shared = list(zip(*shared_vocabulary(pair.teacher, pair.student)))
    total, scored = 0.0, 0
    for row in splits["validation"]:
        with torch.no_grad():  # (GPT-2 adds the embedding of its token type ids, which the BERT tokenizers give)
            own = {k: torch.tensor([row[k]]) for k in ("input_ids", "token_type_ids")}
            theirs = {k: torch.tensor([row[f"teacher_{k}"]]) for k in ("input_ids", "token_type_ids")}
            s_logits = student(**own).logits[0].double()
            t_logits = teacher(**theirs).logits[0].double()
        p_s, p_t = (s_logits / 1.5).softmax(-1), (t_logits / 1.5).softmax(-1)
        s_ids, t_ids = row["input_ids"], row["teacher_input_ids"]
        scored += len(s_ids) - 1  # every token but the first is predicted (plain text)
        if method == "uld":
            for k in range(min(len(s_ids), len(t_ids)) - 1):
                total += sorted_l1(p_s[k], p_t[k])
            continue
        no_first = lambda spans: [None, *spans[1:]]  # noqa: E731 - the first token is predicted by nothing
        for s_group, t_group in span_groups(no_first(row["align_spans"]), no_first(row["align_teacher_spans"])):
            # q(v) = p at the group's first prediction, times the probabilities of its later tokens.
            q_s = p_s[s_group[0] - 1] * math.prod(p_s[j - 1, s_ids[j]].item() for j in s_group[1:])
            q_t = p_t[t_group[0] - 1] * math.prod(p_t[j - 1, t_ids[j]].item() for j in t_group[1:])
            total += sum(abs(q_t[u] - q_s[v]).item() for u, v in shared)
            rest_s = [v for v in range(len(q_s)) if v not in {v for _, v in shared}]
            rest_t = [u for u in range(len(q_t)) if u not in {u for u, _ in shared}]
            total += sorted_l1(q_s[rest_s], q_t[rest_t])
    assert measured == pytest.approx(total / scored, rel=1e-5)
    assert measured > 0.01


def test_prompt_completion_pairs_align_the_completions_padded_on_either_side(tmp_path):
    """Prompt/completion data: each side spells the prompt then the completion; only the completions are scored and
    aligned (spans relative to the completion's text). A teacher that pads on the left shifts its positions."""
    rows = [{"prompt": "it is", "completion": "a movie"}, {"prompt": "it", "completion": "a day"}]
    (tmp_path / "train.jsonl").write_text("")
    raw = DatasetDict({"train": Dataset.from_list(rows)})
    student_tokenizer, teacher_tokenizer = tiny_tokenizer(), word_piece_tokenizer()
    teacher_tokenizer.padding_side = "left"
    data_args = DataArguments(train_file=str(tmp_path / "train.jsonl"))
    paired = CausalLM().prepare_datasets(raw, student_tokenizer, data_args, teacher_tokenizer=teacher_tokenizer)
    first = paired["train"][0]
    # [CLS] it is [SEP] a movie | [CLS] it is [SEP] a mo ##vie: the prompt's tokens cover no character of the text
    assert first["align_spans"] == [[0, 0]] * 4 + [[0, 1], [2, 7]]
    assert first["align_teacher_spans"] == [[0, 0]] * 4 + [[0, 1], [2, 4], [4, 7]]
    assert first["labels"][:4] == [-100] * 4 and first["teacher_labels"][:4] == [-100] * 4

    collate = PairedCollator(
        CausalLM().data_collator(student_tokenizer),
        CausalLM().data_collator(teacher_tokenizer),
        CausalLM(),
        ("input_ids", "attention_mask", "token_type_ids", "labels"),
    )
    batch = collate([paired["train"][0], paired["train"][1]])
    # Row 1 ([CLS] it [SEP] a day on both sides) is padded on the right by the student's collator (to 6) and on the
    # left by the teacher's (to 7): its teacher positions move two to the right.
    assert batch["teacher_attention_mask"][1].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 0]
    # The logits at i predict the token at i + 1: row 0 aligns "a" (4 | 4) and "movie" (5 | mo 5, ##vie 6 merged);
    # row 1 aligns "a" (3 | 5) and "day" (4 | 6).
    assert batch["span_student_positions"].tolist() == [[3, 4], [2, 3]]
    assert batch["span_teacher_positions"].tolist() == [[3, 4], [4, 5]]
    assert batch["span_mask"].all()
    assert batch["span_teacher_merges"].tolist() == [[-1, -1, -1, -1, -1, 1, -1], [-1] * 7]
    assert batch["span_student_merges"].eq(-1).all()


# ---- token classification and question answering -------------------------------------------------------------------


def own_logits(model, row, prefix=""):
    """The model's outputs on one example's own unpadded tokens (`prefix`: `teacher_` for the teacher's)."""
    with torch.no_grad():
        return model(**{k: torch.tensor([row[prefix + k]]) for k in ("input_ids", "token_type_ids")})


def kl(teacher_logits, student_logits, temperature):
    """T^2 KL(softmax(t / T) || softmax(s / T)), straight from the definition."""
    t, s = teacher_logits.double() / temperature, student_logits.double() / temperature
    return temperature**2 * (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum().item()


def test_token_classification_compares_each_word_at_its_first_token_on_both_sides(tmp_path):
    """The kd term: per labelled word, the KL between the teacher's logits at the word's first teacher token and the
    student's at its first student token (words the teacher's tokens split in two included), over the labels."""
    trainer, splits = cross_trainer(tmp_path, "token-classification", per_device_eval_batch_size=4)
    measured = trainer.evaluate()["eval_loss_kd"]
    temperature, total, labelled = trainer.args.temperature, 0.0, 0
    split = 0
    for row in splits["validation"]:
        s_logits = own_logits(trainer.student.eval(), row).logits[0]
        t_logits = own_logits(trainer.teacher, row, "teacher_").logits[0]
        first = lambda words: {w: i for i, w in reversed(list(enumerate(words))) if w >= 0}  # noqa: E731
        s_first, t_first = first(row["align_words"]), first(row["align_teacher_words"])
        split += sum(row["align_teacher_words"].count(w) > 1 for w in t_first)
        for word, position in s_first.items():
            if row["labels"][position] != -100:
                labelled += 1
                total += kl(t_logits[t_first[word]], s_logits[position], temperature)
    assert split > 0  # some words are two teacher tokens
    assert measured == pytest.approx(total / labelled, rel=1e-5)


@pytest.mark.parametrize("student_pieces", [False, True], ids=["teacher-splits-words", "student-splits-words"])
def test_question_answering_moves_the_teachers_span_probabilities_onto_the_students_tokens(tmp_path, student_pieces):
    """The kd term: per example, the teacher's start (end) probabilities added onto the student token where each
    teacher token's characters begin (end), the first token onto the first, renormalised, softened at T, and
    compared by KL with the student's; (start + end) / 2, over the examples. Both ways round: a teacher token split
    in two by the student gives its start to the first piece and its end to the second."""
    trainer, splits = cross_trainer(
        tmp_path,
        "question-answering",
        student_pieces=student_pieces,
        per_device_eval_batch_size=4,
        temperature=1.5,
    )
    measured = trainer.evaluate()["eval_loss_kd"]
    total = 0.0
    for row in splits["validation"]:
        s_out, t_out = own_logits(trainer.student.eval(), row), own_logits(trainer.teacher, row, "teacher_")
        s_spans, t_spans = row["align_spans"], row["align_teacher_spans"]
        for side in ("start", "end"):
            p_t = getattr(t_out, f"{side}_logits")[0].double().softmax(-1)
            moved = torch.zeros(len(s_spans), dtype=torch.float64)
            for j, (a, b) in enumerate(t_spans):
                # The student tokens sharing a character with teacher token j.
                overlap = [i for i, (c, d) in enumerate(s_spans) if c < d and c < b and a < d]
                if j == 0:
                    moved[0] += p_t[0]
                elif a < b and overlap:
                    moved[overlap[0] if side == "start" else overlap[-1]] += p_t[j]
            target = (moved / moved.sum()).clamp_min(1e-30).log()
            total += kl(target, getattr(s_out, f"{side}_logits")[0], 1.5) / 2
    assert measured == pytest.approx(total / len(splits["validation"]), rel=1e-5)


# ---- the teacher cache ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", ["text-classification", "token-classification", "causal-lm-gpt2"])
def test_a_cache_of_the_teachers_own_tokenization_serves_a_student_of_another(tmp_path, case_id):
    """A cache built once, on the data as a run with the teacher's tokenizer prepares it, serves a student of another
    tokenizer: its outputs are put back at the teacher's side of each paired batch, aligned as the live teacher's
    are, and the student trains to the same weights without running the teacher."""
    task_case = case(case_id)
    _, teacher, student_tokenizer, teacher_tokenizer = task_case.cross_pair()
    task = task_for(teacher)
    plain = paired_splits(tmp_path, task_case, teacher_tokenizer, None, teacher)["train"]  # one tokenization
    build_teacher_cache(
        teacher,
        plain,
        CacheArguments(str(tmp_path / "cache"), hidden_layers=[2, 4], hidden_dtype="float32"),
        tokenizer=teacher_tokenizer,
        data_collator=task.data_collator(teacher_tokenizer),
        progress=False,
    )
    splits = paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher)
    splits = {"train": splits["train"], "validation": splits["validation"]}
    # Plain SGD: Adam would blow the float rounding of gradients that are zero in exact arithmetic (the attention
    # keys' biases) up to whole steps.
    terms = {"kd_weight": 1.0, "label_weight": 0.5, "hidden_weight": 1.0, "max_steps": 3, **SGD, "learning_rate": 0.1}
    live, _ = cross_trainer(tmp_path / "live", case_id, splits=splits, **terms)
    cached, _ = cross_trainer(
        tmp_path / "cached", case_id, splits=splits, teacher_cache=str(tmp_path / "cache"), **terms
    )
    calls = []
    cached.teacher.register_forward_hook(lambda *args: calls.append(1))
    live.train()
    cached.train()
    assert not calls  # training read the cache
    assert cached.distillation_settings()["tokenizers"]["student_tokens"] == len(student_tokenizer)
    for (name, a), b in zip(live.student.named_parameters(), cached.student.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_a_cache_that_does_not_fit_a_student_of_another_tokenizer_is_refused(tmp_path):
    task_case = case("causal-lm-gpt2")
    _, teacher, student_tokenizer, teacher_tokenizer = task_case.cross_pair()
    task = task_for(teacher)
    plain = paired_splits(tmp_path, task_case, teacher_tokenizer, None, teacher)["train"]
    collator = task.data_collator(teacher_tokenizer)
    build_teacher_cache(teacher, plain, CacheArguments(str(tmp_path / "top-k"), top_k=4), tokenizer=teacher_tokenizer,
                        data_collator=collator, temperature=2.0, progress=False)  # fmt: skip
    build_teacher_cache(teacher, plain.select(range(30)), CacheArguments(str(tmp_path / "other-rows")),
                        tokenizer=teacher_tokenizer, data_collator=collator, progress=False)  # fmt: skip
    splits = paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher)
    with pytest.raises(ValueError, match=r"^the teacher cache keeps 4 classes per position .* a student of another "
                       r"tokenizer learns a causal-lm teacher's distributions over its whole vocabulary"):  # fmt: skip
        cross_trainer(tmp_path, "causal-lm-gpt2", splits=splits, teacher_cache=str(tmp_path / "top-k"))
    with pytest.raises(ValueError, match="was built from 30 rows"):
        cross_trainer(tmp_path, "causal-lm-gpt2", splits=splits, teacher_cache=str(tmp_path / "other-rows"))


def test_the_cache_command_of_the_teacher_alone_serves_a_student_of_another_tokenizer(tmp_path):
    """`hf-distill cache` on the teacher's recipe (no student given: one tokenization), then `hf-distill train` of a
    pretrained student with its own tokenizer from that cache: the same student as with the live teacher."""
    task_case = case("text-classification")
    teacher, pretrained = save_cross_pair(tmp_path, task_case)
    flags = [*train_flags(tmp_path, teacher, task_case), "--optim", "sgd", "--measure_latency", "false"]
    main(["cache", *flags, "--cache_dir", str(tmp_path / "cache"), "--hidden_dtype", "float32"])
    student = ["--student_model_name_or_path", str(pretrained), "--output_dir"]
    main(["train", *flags, *student, str(tmp_path / "live")])
    main(["train", *flags, *student, str(tmp_path / "cached"), "--teacher_cache", str(tmp_path / "cache")])
    live = AutoModelForSequenceClassification.from_pretrained(tmp_path / "live").state_dict()
    cached = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cached").state_dict()
    assert max((cached[k] - live[k]).abs().max().item() for k in live) < 1e-5
    assert AutoTokenizer.from_pretrained(tmp_path / "cached").get_vocab() == tiny_tokenizer().get_vocab()
    settings = json.loads((tmp_path / "cached" / METRICS_FILE).read_text())["distillation"]
    assert settings["teacher_cache"]["top_k"] is None and settings["tokenizers"]["student_tokens"] == 23


def test_a_pretrained_student_shorter_than_max_length_is_refused_at_start_up(tmp_path):
    task_case = case("text-classification")
    teacher, pretrained = save_cross_pair(tmp_path, task_case)
    short = BertModel(bert_config(2, vocab_size=len(tiny_tokenizer()), max_position_embeddings=16))
    short.save_pretrained(pretrained)  # 16 positions; the data are cut at the teacher's 64
    flags = [*train_flags(tmp_path, teacher, task_case), "--student_model_name_or_path", str(pretrained)]
    with pytest.raises(ValueError, match=r"^--max_length 64 is longer than the student's 16 position embeddings "):
        run_command(["train", *flags])
    assert not (tmp_path / "student" / "model.safetensors").exists()


# ---- completions written by one model, read by the other -----------------------------------------------------------


def training_batches(trainer):
    """Records the batches `compute_loss` trains on."""
    seen, compute_loss = [], trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        if model.training:
            seen.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    return seen


@pytest.mark.parametrize("writer, settings", [("teacher", {"seq_kd": True}), ("student", {"lmbda": 1.0})])
def test_completions_are_decoded_to_text_and_read_by_the_other_model_in_its_own_tokens(tmp_path, writer, settings):
    """Sequence-level KD (the teacher writes) and on-policy distillation (the student writes) across tokenizers: the
    writer's greedy completion of its own prompts, in the tokens it generated; the other model's side, the same text
    in its own tokens; both scored on the completion only, aligned by the text, and trained on."""
    trainer, splits = cross_trainer(
        tmp_path,
        "causal-lm-llama",
        max_new_tokens=4,
        prompt_length=3,
        generation_temperature=0.0,
        kd_weight=1.0,
        label_weight=0.5,
        max_steps=1,
        per_device_train_batch_size=8,
        train_sampling_strategy="sequential",
        **settings,
    )
    seen = training_batches(trainer)
    pair = trainer.tokenizers
    model = trainer.teacher if writer == "teacher" else copy.deepcopy(trainer.student)
    original = trainer.data_collator([splits["train"][i] for i in range(8)])
    own = original if writer == "student" else teacher_inputs(original)
    prompts = prompts_of(own, 3)
    trainer.train()
    (batch,) = seen
    sides = {"student": batch, "teacher": teacher_inputs(batch)}
    tokenizers = {"student": pair.student, "teacher": pair.teacher}
    reader = "student" if writer == "teacher" else "teacher"
    eos = {"student": 3, "teacher": 3}  # the tiny Llamas' end-of-sequence id ([SEP] in both vocabularies)
    texts = 0
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            ids, mask = prompt[None], torch.ones_like(prompt)[None]
            greedy = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=3
            )[0, len(prompt) :].tolist()
        generated = greedy[: greedy.index(3) + 1] if 3 in greedy else greedy
        scored = {name: side["input_ids"][row][side["labels"][row] != -100].tolist() for name, side in sides.items()}
        assert scored[writer] == generated  # the writer's own tokens, cut after its end-of-sequence token
        text = tokenizers[writer].decode([t for t in generated if t != eos[writer]], skip_special_tokens=True)
        read = tokenizers[reader](text, add_special_tokens=False)["input_ids"]
        assert scored[reader] == read + ([eos[reader]] if generated[-1:] == [eos[writer]] else [])
        texts += bool(text.strip())
    assert texts >= 4  # most rows wrote words, which the other side reads
    assert batch["span_mask"].sum() >= texts
    logged = trainer.state.log_history[0]
    assert logged["loss_kd"] > 0 and math.isfinite(logged["loss_kd"])
    trainer.create_model_card()  # the kd line names the method and the generated batches
    (line,) = [line for line in (tmp_path / "out" / "README.md").read_text().splitlines() if "Span alignment" in line]
    source = "the teacher's completions (sequence-level KD" if writer == "teacher" else "the student's own completions"
    assert f"at temperature T = 2; on {source}" in line


def test_a_written_completion_spans_the_text_its_tokens_decode_to():
    """Each generated token spans the characters its decoding adds (a WordPiece continuation adds no space, a new
    word adds one; a special token adds nothing); the other side's offsets of that text then align by the text."""
    pieces = word_piece_tokenizer()
    tokens = pieces.convert_tokens_to_ids(["the", "mo", "##vie", "[SEP]", "was"])
    text, spans = decoded_spans(pieces, tokens)
    assert text == "the movie was"
    assert spans == [[0, 3], [3, 6], [6, 9], [9, 9], [9, 13]]
    words = tiny_tokenizer()(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert span_groups([list(s) for s in words], spans) == [([0], [0]), ([1], [1, 2]), ([2], [4])]
