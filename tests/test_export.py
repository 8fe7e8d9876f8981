"""Exports (hf_distill.export): ONNX float round trip, int8 agreement, int8 save/load, the missing-extra error."""

import importlib.util
import os

import pytest
import torch
from tiny_task_models import llama, pad_batch, random_task_rows, tiny_bert

from hf_distill.export import (
    ONNX_FILE,
    export_onnx,
    load_int8,
    load_onnx,
    quantize_int8,
    quantize_onnx,
    require_export_extra,
    save_int8,
)
from hf_distill.measure import agreement


def batch(task="sequence-classification", n=16, seed=1):
    rows = pad_batch(random_task_rows(task, n, seed=seed))  # random lengths: padded, so the mask matters
    rows.pop("labels")
    return rows


@pytest.mark.parametrize(
    "build, task", [(tiny_bert, "sequence-classification"), (llama, "causal-lm")], ids=["bert", "llama"]
)
def test_the_onnx_float_export_computes_the_pytorch_logits(tmp_path, build, task):
    model = build(num_layers=2).eval()
    export_onnx(model, tmp_path)
    exported = load_onnx(tmp_path)
    inputs = batch(task)  # another batch size and length than the export's example
    expected = model(**inputs).logits
    got = exported(**inputs).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert exported.config.distillation_export == "onnx"


def test_int8_exports_agree_with_the_float_model_and_are_smaller(tmp_path):
    model = tiny_bert(num_layers=2, hidden=64, heads=4).eval()
    inputs = batch(n=64)
    float_logits = model(**inputs).logits.detach()
    quantized = quantize_int8(model)
    assert isinstance(quantized.bert.encoder.layer[0].intermediate.dense, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(model.bert.encoder.layer[0].intermediate.dense, torch.nn.Linear)  # the original is untouched
    export_onnx(model, tmp_path / "onnx")
    quantize_onnx(tmp_path / "onnx", tmp_path / "onnx-int8")
    for logits in (quantized(**inputs).logits, load_onnx(tmp_path / "onnx-int8")(**inputs).logits):
        assert not torch.equal(logits, float_logits)  # quantised ...
        assert (logits - float_logits).abs().max() < 0.05  # ... close ...
        assert agreement(logits.detach().numpy(), float_logits.numpy()) >= 0.9  # ... and reported as agreement
    assert (tmp_path / "onnx-int8" / "model.onnx").stat().st_size < 0.6 * (
        tmp_path / "onnx" / "model.onnx"
    ).stat().st_size


def test_an_int8_export_loads_back_exactly(tmp_path):
    model = tiny_bert(num_layers=2).eval()
    model.config.architectures = ["BertForSequenceClassification"]
    quantized = quantize_int8(model)
    save_int8(quantized, tmp_path)
    loaded = load_int8(tmp_path)
    inputs = batch()
    assert torch.equal(loaded(**inputs).logits, quantized(**inputs).logits)
    assert loaded.config.distillation_export == "int8"


def test_agreement_counts_labelled_tokens_only():
    import numpy as np

    ours = np.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    theirs = np.array([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    assert agreement(ours, theirs) == 0.5
    assert agreement(ours, theirs, np.array([[0, -100], [0, -100]])) == 1.0


def test_a_missing_onnxruntime_names_the_extra_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    with pytest.raises(
        ImportError, match=r"^exporting to ONNX needs onnxruntime, .*pip install 'hf-distill\[export\]'$"
    ):
        export_onnx(tiny_bert(num_layers=1), tmp_path)
    with pytest.raises(ImportError, match=r"hf-distill\[export\]"):
        require_export_extra()


def test_an_int8_export_of_a_model_never_saved_or_loaded_from_another_head_loads_back(tmp_path):
    """save_int8 records the model's own class: a model never saved has no `architectures`, and a classifier loaded
    from a masked-LM checkpoint names BertForMaskedLM (load_int8 rebuilt the wrong class, failing with a KeyError)."""
    from tiny_task_models import masked_lm
    from transformers import AutoModelForSequenceClassification

    masked_lm(num_layers=2).save_pretrained(tmp_path / "base")
    from_base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=3).eval()
    assert from_base.config.architectures == ["BertForMaskedLM"]
    never_saved = tiny_bert(num_layers=2).eval()
    assert never_saved.config.architectures is None
    inputs = batch()
    for name, model in (("never-saved", never_saved), ("from-base", from_base)):
        quantized = quantize_int8(model)
        save_int8(quantized, tmp_path / name)
        loaded = load_int8(tmp_path / name)
        assert type(loaded).__name__ == "BertForSequenceClassification", name
        assert torch.equal(loaded(**inputs).logits, quantized(**inputs).logits), name
    assert model.config.architectures == ["BertForMaskedLM"]  # the caller's config is left alone


@pytest.mark.parametrize("fmt", ["int8", "onnx", "onnx-int8"])
def test_a_failed_export_leaves_nothing_and_a_rerun_works(tmp_path, monkeypatch, fmt):
    model = tiny_bert(num_layers=1).eval()
    write = {
        "int8": lambda folder: save_int8(quantize_int8(model), folder),
        "onnx": lambda folder: export_onnx(model, folder),
        "onnx-int8": lambda folder: quantize_onnx(tmp_path / "source", folder),
    }[fmt]
    export_onnx(model, tmp_path / "source")
    from transformers import PretrainedConfig  # each export saves the config last, after its weights

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(PretrainedConfig, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]  # no folder, no staging folder left
    monkeypatch.undo()
    path = write(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", os.path.basename(path)]


def test_an_export_never_replaces_a_file_unless_asked(tmp_path):
    model = tiny_bert(num_layers=1).eval()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")  # other files are fine: they are not replaced
    export_onnx(model, folder)
    before = (folder / ONNX_FILE).read_bytes()
    (folder / ONNX_FILE).write_bytes(b"the user's own model")
    with pytest.raises(ValueError, match=r"^the ONNX export folder '.*out' already holds config\.json, model\.onnx, "):
        export_onnx(model, folder)
    assert (folder / ONNX_FILE).read_bytes() == b"the user's own model"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", ONNX_FILE, "notes.txt"]
    export_onnx(model, folder, overwrite=True)
    assert (folder / ONNX_FILE).read_bytes() == before and (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", ONNX_FILE, "notes.txt"]


def test_the_onnx_export_of_gpt2_computes_its_logits_without_token_type_ids(tmp_path):
    """GPT-2's forward takes token_type_ids and, given them, adds the embedding of id 0: a graph fed zeros in their
    place gave other logits (max difference 0.5 on a tiny model)."""
    from tiny_task_models import gpt2

    model = gpt2(num_layers=2).eval()
    export_onnx(model, tmp_path)
    exported = load_onnx(tmp_path)
    assert exported.input_names == ["input_ids", "attention_mask"]
    inputs = batch("causal-lm")
    torch.testing.assert_close(exported(**inputs).logits, model(**inputs).logits, rtol=1e-4, atol=1e-5)


def test_an_export_of_a_class_transformers_cannot_rebuild_is_refused_before_writing(tmp_path):
    from transformers import BertForSequenceClassification

    class MyClassifier(BertForSequenceClassification):  # load_int8 could not find it in transformers
        pass

    model = MyClassifier(tiny_bert(num_layers=1).config).eval()
    with pytest.raises(ValueError, match=r"^the int8 export is rebuilt from a transformers class on loading, but "):
        save_int8(quantize_int8(model), tmp_path / "out")
    assert not (tmp_path / "out").exists()
