import dataclasses
import json

import pytest
import yaml
from transformers import HfArgumentParser, TrainingArguments

from hf_distill import DistillationConfig
from hf_distill.terms import TERMS

BASE = {"output_dir": "out", "report_to": "none"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"temperature": 0}, "temperature must be > 0"),
        ({"temperature": -1.5}, "temperature must be > 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"kd_weight": -0.1}, "kd_weight must be a finite number >= 0"),
        ({"hidden_weight": float("inf")}, "hidden_weight must be a finite number >= 0"),
        ({"kd_weight": 0, "label_weight": 0}, "all loss weights are 0"),
        ({"similarity_weight": "x"}, "similarity_weight must be a finite number >= 0"),
        ({"hidden_loss_type": "l1"}, "hidden_loss_type must be one of"),
        ({"attention_loss_type": "cosine"}, "attention_loss_type must be one of"),
        ({"layer_map": "2;1"}, "layer_map: cannot read '2;1'"),
        ({"teacher_model_init_kwargs": "{dtype: bf16}"}, "teacher_model_init_kwargs is not valid JSON"),
        ({"relation_types": "query,score"}, "relation_types must be a comma-separated subset"),
        ({"relation_layers": "6:3,4:2"}, "relation_layers must be 'last' or one 'teacher:student' pair"),
        ({"relation_layers": "0:1"}, "relation_layers must be 'last' or one"),
        ({"relation_heads": 0}, "relation_heads must be a whole number >= 1"),
        ({"teacher_weights": "0.5,x"}, "teacher_weights must be comma-separated numbers"),
        ({"teacher_weights": [0.5, "x"]}, "teacher_weights must be comma-separated numbers"),
        ({"teacher_weights": "0,0"}, "teacher_weights must be numbers >= 0 with a positive sum"),
        (
            {"teacher_model_name_or_path": "a,b,c", "teacher_weights": "1,2"},
            "teacher_weights has 2 weights but teacher_model_name_or_path names 3 teachers",
        ),
        ({"intermediate_teacher": -1}, "intermediate_teacher must be a teacher index >= 0"),
        ({"peft_config": "{r: 8}"}, "peft_config is not valid JSON"),
        ({"peft_config": "[1, 2]"}, "peft_config must be a dict or a JSON object string"),
    ],
)
def test_bad_values_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        DistillationConfig(**BASE, **overrides)


@pytest.mark.parametrize("term", list(TERMS.values()), ids=list(TERMS))
def test_every_term_weight_is_a_validated_documented_field(term):
    """The weight fields come from the term registry: each is a dataclass field with its declared default and help,
    is validated, and is listed in the config's docstring."""
    fields = {f.name: f for f in dataclasses.fields(DistillationConfig)}
    assert fields[term.weight_field].default == term.default_weight
    assert fields[term.weight_field].metadata["help"] == term.help
    assert f"`{term.weight_field}`" in DistillationConfig.__doc__
    assert f"`loss_{term.name}`" in DistillationConfig.__doc__
    with pytest.raises(ValueError, match=f"{term.weight_field} must be a finite number >= 0"):
        DistillationConfig(**BASE, **{term.weight_field: -1.0})
    config = DistillationConfig(**BASE, **{term.weight_field: 3.0})
    assert config.loss_weights[term.name] == 3.0
    assert config.distillation_settings()[term.weight_field] == 3.0


def test_the_weight_fields_written_in_the_config_are_the_registered_terms_in_order():
    """config.py writes one weight field per term of terms.py, after `temperature`: a term added to the registry
    without its field (or a field left behind by a removed term) fails here."""
    names = [f.name for f in dataclasses.fields(DistillationConfig)]
    start = names.index("temperature") + 1
    assert names[start : start + len(TERMS)] == [term.weight_field for term in TERMS.values()]


def test_list_fields_are_parsed_once_from_lists_or_comma_strings(tmp_path):
    config = DistillationConfig(
        **BASE, teacher_model_name_or_path=["a", " b"], teacher_weights="0.7, 0.3", relation_types="value,query"
    )
    assert config.teacher_paths == ["a", "b"] and config.teacher_model_name_or_path == "a,b"
    assert config.teacher_weights == [0.7, 0.3] and config.relation_types == ["value", "query"]
    assert DistillationConfig(**BASE, teacher_weights=[1, 2]).teacher_weights == [1.0, 2.0]
    assert DistillationConfig(**BASE).relation_types == ["query", "key", "value"]
    assert DistillationConfig(**BASE, teacher_model_name_or_path="t").teacher_paths == ["t"]
    parser = HfArgumentParser(DistillationConfig)
    (config,) = parser.parse_args_into_dataclasses(
        ["--output_dir", "o", "--teacher_model_name_or_path", "a,b", "--teacher_weights", "1,3"]
        + ["--relation_types", "key,value"]
    )
    assert (config.teacher_paths, config.teacher_weights, config.relation_types) == (
        ["a", "b"],
        [1.0, 3.0],
        ["key", "value"],
    )
    (config,) = parser.parse_args_into_dataclasses(["--output_dir", "o", "--relation_types", "key", "value"])
    assert config.relation_types == ["key", "value"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": "o", "teacher_weights": [2, 1], "relation_types": ["query"]}))
    (config,) = parser.parse_yaml_file(str(recipe))
    assert (config.teacher_weights, config.relation_types) == ([2.0, 1.0], ["query"])


def test_dict_fields_are_parsed_by_training_arguments_as_trl_does():
    assert DistillationConfig._VALID_DICT_FIELDS[: len(TrainingArguments._VALID_DICT_FIELDS)] == (
        TrainingArguments._VALID_DICT_FIELDS
    )
    assert {"peft_config", "teacher_model_init_kwargs"} <= set(DistillationConfig._VALID_DICT_FIELDS)
    parser = HfArgumentParser(DistillationConfig)
    (config,) = parser.parse_args_into_dataclasses(
        ["--output_dir", "o", "--peft_config", '{"peft_type": "LORA", "r": 8}']
        + ["--teacher_model_init_kwargs", '{"dtype": "float32"}']
    )
    assert config.peft_config == {"peft_type": "LORA", "r": 8}
    assert config.teacher_model_init_kwargs == {"dtype": "float32"}


def test_distillation_settings_are_serialisable_with_one_key_per_term_weight():
    config = DistillationConfig(
        **BASE,
        teacher_model_name_or_path="a,b",
        teacher_weights=[0.7, 0.3],
        relation_weight=1.0,
        relation_types=["query", "value"],
        peft_config={"peft_type": "LORA", "r": 4},
    )
    settings = json.loads(json.dumps(config.distillation_settings()))
    assert {term.weight_field for term in TERMS.values()} <= set(settings)
    assert settings["teachers"] == "a,b" and settings["teacher_weights"] == "0.7,0.3"
    assert settings["relation_types"] == "query,value"
    assert settings["peft"] == {"peft_type": "LORA", "r": 4, "saved": "adapter"}


def test_defaults_and_normalisation():
    config = DistillationConfig(
        **BASE, layer_map=[[2, 1], [4, 2]], teacher_model_init_kwargs='{"dtype": "float32"}', logit_mse_weight=1
    )
    assert config.layer_map == "2:1,4:2"
    assert config.teacher_model_init_kwargs == {"dtype": "float32"}
    assert config.loss_weights == {
        "label": 0.5,
        "kd": 0.5,
        "logit_mse": 1.0,
        "hidden": 0.0,
        "attention": 0.0,
        "similarity": 0.0,
        "relation": 0.0,
    }
    assert config.temperature == 2.0


def test_every_field_is_a_documented_flag(capsys):
    parser = HfArgumentParser(DistillationConfig)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--help"])
    help_text = capsys.readouterr().out
    for flag in (
        "--teacher_model_name_or_path",
        "--teacher_model_init_kwargs",
        "--temperature",
        "--kd_weight",
        "--label_weight",
        "--similarity_weight",
        "--relation_weight",
        "--logit_mse_weight",
        "--hidden_weight",
        "--hidden_loss_type",
        "--attention_weight",
        "--attention_loss_type",
        "--layer_map",
    ):
        assert flag in help_text
    assert "{mse,cosine}" in help_text and "{kl,mse}" in help_text


def test_flags_and_yaml_parse(tmp_path):
    parser = HfArgumentParser(DistillationConfig)
    (config,) = parser.parse_args_into_dataclasses(
        ["--output_dir", "o", "--temperature", "3", "--hidden_weight", "1", "--layer_map", "2:1,4:2"]
    )
    assert (config.temperature, config.hidden_weight, config.layer_map) == (3.0, 1.0, "2:1,4:2")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": "o", "kd_weight": 1.0, "layer_map": [[0, 0], [4, 2]]}))
    (config,) = parser.parse_yaml_file(str(recipe))
    assert config.kd_weight == 1.0 and config.layer_map == "0:0,4:2"
