"""The package's loggers (`hf_distill.<module>`), governed by transformers' verbosity.

`--log_level info` (TrainingArguments sets transformers' verbosity), `transformers.logging.set_verbosity_error()` and
`TRANSFORMERS_VERBOSITY` govern hf_distill's messages exactly as they govern transformers' own: the `hf_distill`
logger prints through one handler whose filter reads transformers' verbosity when a record is emitted, so a later
change of verbosity takes effect at once. Like transformers' library logger, it does not propagate to the root
logger: a script that configures the root logger does not print each message twice.
"""

from __future__ import annotations

import logging
import sys
import threading

from transformers.utils import logging as transformers_logging

_ROOT = "hf_distill"
_lock = threading.Lock()
_handler: logging.Handler | None = None


class _TransformersVerbosity(logging.Filter):
    """Lets a record through when transformers' current verbosity would print one of its level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= transformers_logging.get_verbosity()


class _StderrHandler(logging.StreamHandler):
    """Writes to the `sys.stderr` of the moment (a redirected or captured stderr too), not the one at import."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property always reads sys.stderr
        pass


def _configure() -> None:
    global _handler
    with _lock:
        if _handler is not None:
            return
        _handler = _StderrHandler()
        _handler.setFormatter(logging.Formatter(f"[{_ROOT}] %(message)s"))
        _handler.addFilter(_TransformersVerbosity())
        root = logging.getLogger(_ROOT)
        root.addHandler(_handler)
        root.setLevel(logging.DEBUG)  # records are made at every level; the handler's filter decides what prints
        root.propagate = False


def get_logger(name: str) -> logging.Logger:
    """The logger of a module of the package (`get_logger(__name__)`)."""
    _configure()
    return logging.getLogger(name)
