"""Folders a run writes into: the output folder (never a teacher's, never someone else's files), its checkpoints (an
interruption leaves one to resume from), and the teacher cache folder (clear refusals, nothing written into an
unrelated folder)."""

import json
import os

import pytest
import safetensors.torch
from tiny_task_models import make_trainer, pad_collate, random_classification_dataset, tiny_bert

from hf_distill.cache import CACHE_INFO_NAME, CacheArguments, CacheMismatchError, TeacherCache, build_teacher_cache
from hf_distill.output_folders import check_output_dir, last_complete_checkpoint
from hf_distill.trainer import PROJECTIONS_NAME

pytestmark = pytest.mark.usefixtures("one_thread")


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---- the output folder ----------------------------------------------------------------------------------------------


def test_new_or_empty_folder_is_fine(tmp_path, teacher_folder):
    check_output_dir(tmp_path / "new" / "student", protected=[str(teacher_folder)])
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", protected=[str(teacher_folder), "org/hub-id-not-a-folder", None])


def test_folder_of_another_model_is_refused_unless_overwrite(tmp_path):
    other = tmp_path / "other-model"
    tiny_bert(num_layers=2).save_pretrained(other)
    with pytest.raises(ValueError) as excinfo:
        check_output_dir(other)
    message = str(excinfo.value)
    assert str(other) in message and "config.json" in message and "model.safetensors" in message
    assert "--overwrite_output_dir" in message
    check_output_dir(other, overwrite=True)


def test_folder_with_other_files_is_refused_naming_them(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "tweets.csv").write_text("text,label\n", encoding="utf-8")
    (folder / "notes").mkdir()
    with pytest.raises(ValueError, match=r"already holds notes/, tweets\.csv, which this run did not write"):
        check_output_dir(folder)


@pytest.mark.parametrize("where", ["teacher", "inside", "symlink"])
def test_teacher_folder_is_refused_even_with_overwrite(tmp_path, teacher_folder, where):
    target = {
        "teacher": teacher_folder,
        "inside": teacher_folder / "student",
        "symlink": tmp_path / "link-to-teacher",
    }[where]
    if where == "symlink":
        target.symlink_to(teacher_folder, target_is_directory=True)
    before = listing(teacher_folder)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="the teacher's folder") as excinfo:
            check_output_dir(target, protected=["org/some-hub-id", str(teacher_folder)], overwrite=overwrite)
        assert str(target) in str(excinfo.value) and "overwrite_output_dir does not allow" in str(excinfo.value)
    assert listing(teacher_folder) == before


def test_own_previous_run_is_fine_and_resumes(tmp_path, teacher_folder, dataset):
    # A student the user brought (no distillation_teacher in its config): the run is recognised by its checkpoints.
    student = tiny_bert(num_layers=2, hidden=16, seed=1)
    trainer = make_trainer(tmp_path, student, tiny_bert(4), dataset, save_strategy="steps", save_steps=2)
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    assert "config.json" in os.listdir(out) and "checkpoint-4" in os.listdir(out)
    check_output_dir(out, protected=[str(teacher_folder)])
    (out / "distillation_metrics.json").write_text("{}", encoding="utf-8")
    check_output_dir(out, protected=[str(teacher_folder)])


# ---- checkpoints: an interrupted save keeps the previous checkpoint, which resumes ---------------------------------


def new_trainer(folder, dataset, settings):
    return make_trainer(folder, tiny_bert(num_layers=2, hidden=16, seed=1), tiny_bert(4), dataset, **settings)


def test_interrupted_checkpoint_leaves_the_previous_one_resumable(tmp_path, dataset, monkeypatch):
    settings = {"hidden_weight": 1.0, "max_steps": 4, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 1}
    real_save_file = safetensors.torch.save_file

    def full_disk_at_step_4(tensors, filename, metadata=None):
        if PROJECTIONS_NAME in str(filename) and "checkpoint-4" in str(filename):
            raise OSError(28, "No space left on device")
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk_at_step_4)
    trainer = new_trainer(tmp_path / "run", dataset, settings)
    with pytest.raises(OSError, match="No space left"):
        trainer.train()
    monkeypatch.setattr(safetensors.torch, "save_file", real_save_file)

    out = tmp_path / "run" / "out"
    previous = out / "checkpoint-2"
    assert sorted(os.listdir(out)) == ["checkpoint-2", "checkpoint-4"], sorted(os.listdir(out))
    assert (previous / PROJECTIONS_NAME).is_file() and (previous / "trainer_state.json").is_file()
    assert last_complete_checkpoint(out) == str(previous)

    # The half-written checkpoint is refused with what happened and where to resume from, not blamed on settings.
    broken = new_trainer(tmp_path / "run", dataset, settings)
    with pytest.raises(FileNotFoundError) as excinfo:
        broken.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    message = str(excinfo.value)
    assert "incomplete" in message and f"resume from {previous}" in message and "same hidden-state" not in message

    resumed = new_trainer(tmp_path / "run", dataset, settings)
    resumed.train(resume_from_checkpoint=last_complete_checkpoint(out))
    assert resumed.state.global_step == 4
    assert (out / "checkpoint-4" / PROJECTIONS_NAME).is_file() and not previous.exists()  # rotated once complete


# ---- the teacher cache folder ---------------------------------------------------------------------------------------


def build(path):
    rows = random_classification_dataset(8)
    args = CacheArguments(str(path), cache_batch_size=4)
    return build_teacher_cache(tiny_bert(4), rows, args, data_collator=pad_collate, progress=False)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_malformed_cache_info_gives_a_one_line_error_naming_the_file(tmp_path, content):
    cache = tmp_path / "cache"
    build(cache)
    (cache / CACHE_INFO_NAME).write_text(content, encoding="utf-8")
    before = listing(cache)
    for action in (lambda: TeacherCache(str(cache)), lambda: build(cache)):
        with pytest.raises(CacheMismatchError) as excinfo:
            action()
        message = str(excinfo.value)
        assert "\n" not in message and str(cache / CACHE_INFO_NAME) in message
        assert "not a teacher cache record" in message
        assert "build it again in an empty folder" in message
    assert listing(cache) == before


def test_unrelated_folder_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "my-data"
    folder.mkdir()
    (folder / "tweets.csv").write_text("text,label\n", encoding="utf-8")
    with pytest.raises(CacheMismatchError) as excinfo:
        build(folder)
    message = str(excinfo.value)
    assert str(folder) in message and "tweets.csv" in message and "empty folder" in message
    assert listing(folder) == ["tweets.csv"]

    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(CacheMismatchError, match="is a file"):
        build(a_file)


def test_empty_or_new_cache_folder_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    assert len(build(tmp_path / "empty")) == 8
    assert len(build(tmp_path / "new" / "cache")) == 8
    info = json.loads((tmp_path / "empty" / CACHE_INFO_NAME).read_text())
    assert info["complete"] and info["num_rows"] == 8


# ---- staged writes: never seen half-done ----------------------------------------------------------------------------


def test_a_staged_folder_appears_whole_or_not_at_all(tmp_path):
    from hf_distill.output_folders import staged_folder

    with staged_folder(tmp_path / "new") as stage:
        (stage / "a.txt").write_text("a")
        assert not (tmp_path / "new").exists()  # nothing at the target until the block ends
    assert listing(tmp_path) == ["new", "new/a.txt"]
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(tmp_path / "other") as stage:
            (stage / "b.txt").write_text("b")
            raise KeyboardInterrupt  # Ctrl-C part-way: nothing is left, not even the staging folder
    assert listing(tmp_path) == ["new", "new/a.txt"]
    with staged_folder(tmp_path / "new") as stage:  # an existing folder gets the new entries beside its own
        (stage / "b.txt").write_text("b")
    assert listing(tmp_path) == ["new", "new/a.txt", "new/b.txt"]
    with pytest.raises(ValueError, match=r"^output folder '.*new' already holds a\.txt, which this would replace"):
        with staged_folder(tmp_path / "new") as stage:
            (stage / "a.txt").write_text("replaced")
    assert (tmp_path / "new" / "a.txt").read_text() == "a" and listing(tmp_path)[-1] == "new/b.txt"
    with staged_folder(tmp_path / "new", replace={"a.txt"}) as stage:
        (stage / "a.txt").write_text("replaced")
    assert (tmp_path / "new" / "a.txt").read_text() == "replaced"
    assert listing(tmp_path) == ["new", "new/a.txt", "new/b.txt"]


def test_staging_folders_of_killed_processes_are_removed_and_no_other(tmp_path):
    import socket
    import subprocess

    from hf_distill.output_folders import STAGING_PREFIX, staged_folder

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    names = {
        "killed": f"{STAGING_PREFIX}{host}-{dead.pid}-0a1b2c3d",
        "running": f"{STAGING_PREFIX}{host}-{os.getpid()}-0a1b2c3d",
        "other machine": f"{STAGING_PREFIX}other-host-{dead.pid}-0a1b2c3d",
        "user's": "my-partial-results",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "half.bin").write_bytes(b"x")
    with staged_folder(tmp_path / "out") as stage:
        (stage / "done.txt").write_text("done")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["out", names["running"], names["other machine"], names["user's"]])
