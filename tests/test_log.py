"""hf_distill's messages follow transformers' verbosity (`--log_level`, `set_verbosity_*`), and print once."""

import logging

import pytest
from transformers.utils import logging as transformers_logging

from hf_distill.log import get_logger


@pytest.fixture
def verbosity():
    before = transformers_logging.get_verbosity()
    yield transformers_logging.set_verbosity
    transformers_logging.set_verbosity(before)


def test_transformers_verbosity_governs_the_package_logger(verbosity, capfd):
    logger = get_logger("hf_distill.some_module")
    verbosity(logging.INFO)  # what --log_level info does (TrainingArguments sets transformers' verbosity)
    logger.info("an info line")
    verbosity(logging.ERROR)  # transformers.logging.set_verbosity_error()
    logger.warning("a silenced warning")
    logger.error("an error line")
    err = capfd.readouterr().err
    assert "[hf_distill] an info line" in err
    assert "a silenced warning" not in err
    assert err.count("an error line") == 1


def test_the_package_logger_does_not_propagate_to_the_root(monkeypatch):
    # conftest turns propagation on for caplog; the package itself leaves it off, as transformers does.
    root = get_logger("hf_distill")
    monkeypatch.setattr(root, "propagate", False)
    import importlib

    import hf_distill.log as log

    importlib.reload(log)  # configuring again must not add a second handler
    assert len([h for h in root.handlers if h.filters]) == 1
