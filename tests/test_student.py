"""Tests for hf_distill.student: tiny in-process models only (no Hub access)."""

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers
from tiny_task_models import FAMILIES, family_config
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from hf_distill import LayerMap
from hf_distill.layer_map import DEFAULT_STUDENT_STRATEGY, LAYER_STRATEGIES
from hf_distill.student import SUPPORTED_MODEL_TYPES, build_student, select_teacher_layers, teacher_reference

# id -> (model class, model type in the shared FAMILIES table, config overrides, state-dict prefix of the layer list)
MODELS = {
    "bert": ("BertForSequenceClassification", "bert", {}, "bert.encoder.layer"),
    "bert-mlm": ("BertForMaskedLM", "bert", {}, "bert.encoder.layer"),
    "bert-base": ("BertModel", "bert", {}, "encoder.layer"),
    "roberta": ("RobertaForSequenceClassification", "roberta", {}, "roberta.encoder.layer"),
    "xlm-roberta": ("XLMRobertaForSequenceClassification", "xlm-roberta", {}, "roberta.encoder.layer"),
    "distilbert": ("DistilBertForSequenceClassification", "distilbert", {}, "distilbert.transformer.layer"),
    "electra": ("ElectraForSequenceClassification", "electra", {}, "electra.encoder.layer"),
    "mpnet": ("MPNetForSequenceClassification", "mpnet", {}, "mpnet.encoder.layer"),
    "deberta-v2": ("DebertaV2ForSequenceClassification", "deberta-v2", {}, "deberta.encoder.layer"),
    "gpt2": ("GPT2LMHeadModel", "gpt2", {}, "transformer.h"),
    "llama": ("LlamaForCausalLM", "llama", dict(tie_word_embeddings=True), "model.layers"),
    "qwen2": (
        "Qwen2ForCausalLM",
        "qwen2",
        dict(use_sliding_window=True, sliding_window=4, max_window_layers=2),
        "model.layers",
    ),
    "qwen3": (
        "Qwen3ForCausalLM",
        "qwen3",
        dict(use_sliding_window=True, sliding_window=4, max_window_layers=1),
        "model.layers",
    ),
    "mistral": ("MistralForCausalLM", "mistral", dict(sliding_window=4), "model.layers"),
}


def test_every_family_of_the_shared_table_is_built():
    assert {model_type for _, model_type, _, _ in MODELS.values()} == set(FAMILIES) == set(SUPPORTED_MODEL_TYPES)


def make(family, seed=0):
    model_name, model_type, overrides, _ = MODELS[family]
    config = family_config(model_type, **overrides)
    torch.manual_seed(seed)
    return getattr(transformers, model_name)(config).eval()


def forward(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 99, (2, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0  # right padding on the second row
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask)
    return out.logits if "logits" in out else out.last_hidden_state


def layer_split(state, prefix):
    """{layer index: {rest: tensor}} and {non-layer key: tensor}."""
    layers, rest = {}, {}
    for key, value in state.items():
        if key.startswith(prefix + "."):
            index, _, name = key[len(prefix) + 1 :].partition(".")
            layers.setdefault(int(index), {})[name] = value
        else:
            rest[key] = value
    return layers, rest


@pytest.mark.parametrize("family", MODELS)
def test_every_other_copies_teacher_layers_exactly(family):
    teacher = make(family)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_student(teacher, strategy="every_other")

    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == 2
    assert student.config.distillation_teacher_layers == [0, 2]
    assert student.config.distillation_teacher is None
    prefix = MODELS[family][3]
    assert len(student.get_submodule(prefix)) == 2
    t_layers, t_rest = layer_split(teacher.state_dict(), prefix)
    s_layers, s_rest = layer_split(student.state_dict(), prefix)
    assert sorted(s_layers) == [0, 1]
    for s_index, t_index in enumerate([0, 2]):
        assert s_layers[s_index].keys() == t_layers[t_index].keys()
        for name, value in s_layers[s_index].items():
            assert torch.equal(value, t_layers[t_index][name]), (family, s_index, name)
    assert s_rest.keys() == t_rest.keys()
    for key, value in s_rest.items():
        assert torch.equal(value, t_rest[key]), (family, key)

    # The student owns its weights: training it must not touch the teacher, and building left the teacher intact.
    with torch.no_grad():
        for param in student.parameters():
            param.add_(1.0)
    after = teacher.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("family", MODELS)
def test_all_layers_student_reproduces_teacher(family):
    teacher = make(family)
    student = build_student(teacher, num_layers=4, strategy="first").eval()
    torch.testing.assert_close(forward(student), forward(teacher), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_tied_lm_head(family):
    teacher = make(family)
    student = build_student(teacher, layers=[1, 3])
    assert student.lm_head.weight is student.get_input_embeddings().weight
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)

    # A state dict that omits the tied copy (as some checkpoints do) must fall back to the tied source.
    full_state = teacher.state_dict
    teacher.state_dict = lambda: {k: v for k, v in full_state().items() if k != "lm_head.weight"}
    student = build_student(teacher, layers=[1, 3])
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)


def test_untied_lm_head_and_layer_types():
    teacher = make("qwen2")  # untied; layer_types = full, full, sliding, sliding
    assert teacher.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    student = build_student(teacher, layers=[1, 2, 3])
    assert student.lm_head.weight is not student.get_input_embeddings().weight
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    assert student.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert student.config.max_window_layers == 1
    assert student.generation_config.to_dict() == teacher.generation_config.to_dict()


@pytest.mark.parametrize(
    ("n", "k", "strategy", "layers", "expected"),
    [
        # uniform: blocks round(i * n / k) - 1, i = 1..k, TinyBERT's layers (the last block is always kept)
        (6, 3, "uniform", None, [1, 3, 5]),
        (12, 4, "uniform", None, [2, 5, 8, 11]),
        (12, 6, "uniform", None, [1, 3, 5, 7, 9, 11]),
        (4, 3, "uniform", None, [0, 2, 3]),
        (4, 4, "uniform", None, [0, 1, 2, 3]),
        (12, None, "every_other", None, [0, 2, 4, 6, 8, 10]),
        (5, None, "every_other", None, [0, 2, 4]),
        (12, 2, "every_other", None, [0, 2]),
        (4, 2, "first", None, [0, 1]),
        (4, 2, "last", None, [2, 3]),
        (4, None, "uniform", [0, 3], [0, 3]),
        (4, 2, "last", [0, 3], [0, 3]),
    ],
)
def test_select_teacher_layers(n, k, strategy, layers, expected):
    assert select_teacher_layers(n, k, strategy, layers) == expected


@pytest.mark.parametrize(
    ("k", "strategy", "layers", "match"),
    [
        (0, "uniform", None, r"1 <= num_layers <= 4"),
        (5, "first", None, r"1 <= num_layers <= 4"),
        (None, "uniform", None, "requires `num_layers`"),
        (3, "every_other", None, r"num_layers <= 2"),
        (None, "middle", None, "uniform, every_other, first, last"),
        (None, "uniform", [0, 4], r"layer 4 .*0\.\.3"),
        (None, "uniform", [-1, 2], r"layer -1 .*0\.\.3"),
        (None, "uniform", [2, 1], "strictly increasing"),
        (None, "uniform", [1, 1], "strictly increasing"),
        (None, "uniform", [], "empty"),
        (3, "uniform", [0, 1], "disagrees"),
    ],
)
def test_select_teacher_layers_errors(k, strategy, layers, match):
    with pytest.raises(ValueError, match=match):
        select_teacher_layers(4, k, strategy, layers)


def test_build_student_validates_layer_choice():
    teacher = make("bert")
    with pytest.raises(ValueError, match=r"1 <= num_layers <= 4"):
        build_student(teacher, num_layers=0, strategy="uniform")
    with pytest.raises(ValueError, match=r"every_other from 4 teacher layers allows 1 <= num_layers <= 2"):
        build_student(teacher, num_layers=3)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        build_student(teacher, layers=[0, 7])


def test_unsupported_model_types():
    torch.manual_seed(0)
    t5 = transformers.T5ForConditionalGeneration(
        transformers.T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    )
    with pytest.raises(ValueError, match=r"'t5'.*" + ", ".join(SUPPORTED_MODEL_TYPES)):
        build_student(t5, num_layers=1)
    encoder = family_config("bert").to_dict()
    albert_sizes = {
        key: encoder[key] for key in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size")
    }
    albert = transformers.AlbertForSequenceClassification(
        transformers.AlbertConfig(**albert_sizes, num_attention_heads=4, embedding_size=16, num_hidden_groups=1)
    )
    with pytest.raises(ValueError, match="'albert'.*shares one set of layer weights"):
        build_student(albert, num_layers=2)


def test_strict_copy_rejects_mismatches():
    teacher = make("bert")
    teacher.config.intermediate_size = 40  # the student is built from the config, so its shapes no longer match
    with pytest.raises(RuntimeError, match=r"intermediate\.dense\.weight.*\(40, 32\).*\(37, 32\)"):
        build_student(teacher, num_layers=2)
    teacher = make("bert")
    teacher.extra_scale = torch.nn.Parameter(torch.ones(3))  # a teacher weight the student has no place for
    with pytest.raises(RuntimeError, match="extra_scale"):
        build_student(teacher, num_layers=2)


def test_missing_path():
    with pytest.raises(OSError, match="no/such/teacher-dir"):
        build_student("/no/such/teacher-dir", num_layers=2)


@pytest.mark.parametrize(
    ("family", "auto_class"),
    [
        ("bert", AutoModelForSequenceClassification),
        ("distilbert", AutoModelForSequenceClassification),
        ("mpnet", AutoModelForSequenceClassification),
        ("gpt2", AutoModelForCausalLM),
        ("qwen2", AutoModelForCausalLM),
    ],
)
def test_save_and_reload(tmp_path, family, auto_class):
    student = build_student(make(family), strategy="every_other").eval()
    student.save_pretrained(tmp_path)
    reloaded, info = auto_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(reloaded) is type(student)
    assert reloaded.config.num_hidden_layers == 2
    assert reloaded.config.distillation_teacher_layers == [0, 2]
    torch.testing.assert_close(forward(reloaded.eval()), forward(student), atol=0, rtol=0)


def test_teacher_from_path_logs_and_keeps_dtype(tmp_path, caplog):
    make("bert").to(torch.bfloat16).save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="hf_distill.student"):
        student = build_student(str(tmp_path), num_layers=2, strategy="last", dtype=torch.bfloat16)
    assert student.dtype == torch.bfloat16
    assert student.config.distillation_teacher == tmp_path.name  # the folder's name only, not where it lies
    assert student.config.distillation_teacher_layers == [2, 3]
    assert "kept teacher layers [2, 3]" in caplog.text and " -> " in caplog.text
    student.save_pretrained(tmp_path / "student")
    config = transformers.AutoConfig.from_pretrained(tmp_path / "student")
    assert config.distillation_teacher == tmp_path.name and config.distillation_teacher_layers == [2, 3]
    with pytest.raises(ValueError, match="only apply when `teacher` is a path"):
        build_student(make("bert"), num_layers=2, dtype=torch.float16)


def test_default_strategy_is_distilberts_every_other():
    assert DEFAULT_STUDENT_STRATEGY == "every_other"
    assert select_teacher_layers(12, 4) == [0, 2, 4, 6]
    # 12 -> 6 would be 0,3,6,9 under the old default ("uniform" with the first block kept)
    teacher = transformers.BertForSequenceClassification(family_config("bert", layers=6))
    assert build_student(teacher, num_layers=3).config.distillation_teacher_layers == [0, 2, 4]
    assert build_student(teacher).config.distillation_teacher_layers == [0, 2, 4]  # k defaults to ceil(n / 2)


@pytest.mark.parametrize(("n", "k"), [(12, 4), (6, 3), (4, 3)])
@pytest.mark.parametrize("strategy", LAYER_STRATEGIES)
def test_a_strategy_names_the_same_teacher_layers_for_build_student_and_layer_map(strategy, n, k):
    if strategy == "every_other" and k > (n + 1) // 2:  # 4 -> 3: there are only 2 every-other layers
        for build in (lambda: select_teacher_layers(n, k, strategy), lambda: LayerMap.from_spec(strategy, n, k)):
            with pytest.raises(ValueError, match=r"every_other from 4 teacher layers allows 1 <= num_layers <= 2"):
                build()
        return
    copied_blocks = select_teacher_layers(n, k, strategy)
    layer_map = LayerMap.from_spec(strategy, n, k)
    # Student block i copies teacher block b, whose output is hidden_states[b + 1]; the layer map pairs them.
    assert layer_map.hidden_state_indices() == [(block + 1, i) for i, block in enumerate(copied_blocks, start=1)]


def test_uniform_student_learns_each_layer_from_the_teacher_layer_it_copies():
    teacher = make("bert")  # 4 layers
    student = build_student(teacher, num_layers=3, strategy="uniform")
    assert student.config.distillation_teacher_layers == [0, 2, 3]
    assert LayerMap.from_spec("uniform", 4, 3).spec() == "1:1,3:2,4:3"
    # The last student block is the teacher's last block: same weights, so the same map of its input to its output.
    hidden = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(student.bert.encoder.layer[2](hidden)[0], teacher.bert.encoder.layer[3](hidden)[0])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("org/teacher", "org/teacher"),
        ("bert-base-uncased", "bert-base-uncased"),
        ("/home/someone/models/my-teacher", "my-teacher"),
        ("/home/someone/models/my-teacher/", "my-teacher"),
        ("./runs/my-teacher", "my-teacher"),
        ("../my-teacher", "my-teacher"),
        ("~/models/my-teacher", "my-teacher"),
        ("runs/deep/my-teacher", "my-teacher"),  # not a valid repo id: a path
        ("", None),
        (None, None),
    ],
)
def test_teacher_reference_keeps_hub_ids_and_only_the_name_of_local_folders(name, expected):
    assert teacher_reference(name) == expected


def test_saved_config_names_a_hub_teacher_by_id_and_a_local_one_by_folder_name(tmp_path, monkeypatch):
    teacher = make("bert")
    teacher.name_or_path = "some-org/bert-teacher"  # what from_pretrained("some-org/bert-teacher") records
    assert build_student(teacher, num_layers=2).config.distillation_teacher == "some-org/bert-teacher"

    # A relative folder that looks like a repo id is local when it exists.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    make("bert").save_pretrained(tmp_path / "runs" / "teacher")
    student = build_student("runs/teacher", num_layers=2)
    assert student.config.distillation_teacher == "teacher"
    student.save_pretrained(tmp_path / "student")
    config_text = (tmp_path / "student" / "config.json").read_text()
    assert '"distillation_teacher": "teacher"' in config_text
    assert str(tmp_path) not in config_text and "runs" not in config_text
