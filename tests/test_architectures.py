"""The architecture table and `unwrap`: one place that knows each family's layers and sees through wrappers."""

import pytest
import torch
import transformers
from tiny_task_models import VOCAB_SIZE, tiny_bert
from torch import nn

from hf_distill import architectures, relations, student
from hf_distill.architectures import (
    ARCHITECTURES,
    SUPPORTED_MODEL_TYPES,
    Architecture,
    architecture,
    input_names,
    layer_stack,
    layer_stack_path,
    qkv_paths,
    unwrap,
)


class DataParallelLike(nn.Module):
    """What DDP and Accelerate wrappers look like from outside: the model at `.module`, no `config`."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def bert():
    return tiny_bert(num_layers=2).eval()


def distilbert():
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=VOCAB_SIZE, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    return transformers.DistilBertForSequenceClassification(config).eval()


def test_one_table_serves_the_student_builder_and_the_relation_capture():
    assert student.SUPPORTED_MODEL_TYPES is SUPPORTED_MODEL_TYPES is relations.SUPPORTED_MODEL_TYPES
    assert SUPPORTED_MODEL_TYPES == tuple(sorted(ARCHITECTURES))
    assert "albert" not in ARCHITECTURES and "albert" in architectures.REJECTED_MODEL_TYPES
    assert qkv_paths("bert") == ("attention.self.query", "attention.self.key", "attention.self.value")
    assert qkv_paths("gpt2") == ("attn.c_attn",)  # one fused projection
    with pytest.raises(ValueError, match="three projections or one fused"):
        Architecture("layers", ("q", "k"))


def test_unknown_and_rejected_families_are_named_with_the_reason():
    with pytest.raises(ValueError, match=r"model_type 't5'.*does not know where its layers are.*bert, deberta-v2"):
        qkv_paths("t5")
    albert_config = transformers.AlbertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        embedding_size=16,
    )
    albert = transformers.AlbertModel(albert_config)
    with pytest.raises(ValueError, match=r"AlbertModel \(model_type 'albert'\): ALBERT shares one set of layer"):
        architecture(albert, "build a student from")
    with pytest.raises(ValueError, match=r"Cannot find the layers of Linear \(model_type None\)"):
        layer_stack(nn.Linear(2, 2))


def test_layer_stack_of_task_base_and_wrapped_models():
    model = bert()
    layers = model.bert.encoder.layer
    for wrapped in (model, model.bert, torch.compile(model), DataParallelLike(model)):
        assert layer_stack(wrapped) is layers
    assert layer_stack_path(model) == "bert.encoder.layer"  # also the state-dict prefix
    assert layer_stack_path(model.bert) == "encoder.layer"
    broken = bert()
    broken.bert.encoder.layer = nn.Sequential(*broken.bert.encoder.layer)
    with pytest.raises(RuntimeError, match="no layer list at 'encoder.layer'"):
        layer_stack(broken)


def test_unwrap_peels_peft_compile_and_ddp_in_any_order():
    peft = pytest.importorskip("peft")
    model = bert()
    adapted = peft.get_peft_model(bert(), peft.LoraConfig(r=2, target_modules=["query"]))
    inner = adapted.get_base_model()
    assert unwrap(model) is model
    assert unwrap(torch.compile(model)) is model
    assert unwrap(DataParallelLike(torch.compile(model))) is model
    assert unwrap(torch.compile(DataParallelLike(model))) is model
    assert unwrap(adapted) is inner and unwrap(torch.compile(adapted)) is inner
    assert unwrap(DataParallelLike(torch.compile(adapted))) is inner
    linear = nn.Linear(2, 2)
    assert unwrap(linear) is linear


@pytest.mark.parametrize("make", [bert, distilbert])
def test_input_names_read_through_torch_compile(make):
    # torch.compile's OptimizedModule takes (*args, **kwargs): reading its signature gave no names, so a compiled
    # teacher was called with no inputs ("You must specify exactly one of input_ids or inputs_embeds").
    model = make()
    names = input_names(model)
    assert {"input_ids", "attention_mask"} <= names
    assert ("token_type_ids" in names) == (model.config.model_type == "bert")
    assert input_names(torch.compile(model)) == names
    assert input_names(DataParallelLike(torch.compile(model))) == names
    assert input_names(torch.compile(DataParallelLike(model))) == names
