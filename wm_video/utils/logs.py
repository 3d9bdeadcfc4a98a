"""Logging for the command line, set up in one place: one handler, one format, every line printed once.

What a run shows by default: this project's INFO and above (step progress, what is being trained, where things
were written), and WARNING and above from everything else, so that what matters (``QUALITY GATE FAILED:``
warnings, errors, the end-of-run summary on stdout) is not buried in library chatter. ``wm-video -v`` shows this
project's DEBUG and the libraries' INFO too.

Three kinds of noise are handled here, never by editing library code:

* Lightning attaches its own console handler to the ``lightning`` logger at import (``INFO: ...`` lines) and
  lets records propagate to the root handler as well, so each message came out twice. Its loggers are adopted:
  their console handlers removed, records propagated to the one root handler, level WARNING. Lightning is
  imported after the CLI sets up logging, so :func:`adopt_library_loggers` runs again when the Trainer is built.
* Third-party warnings that say nothing a user of this project can act on are ignored by message
  (:data:`QUIET_WARNINGS`); every other warning still shows.
* ``huggingface_hub``'s ``PyTorchModelHubMixin`` prints (``print``, not logging) a line for every model loaded
  from a local folder: :func:`quiet_hub_loads` drops that exact line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PROJECT_LOGGER = "wm_video"

# Libraries that give their loggers a console handler or a level of their own at import.
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric",
                   "DeepSpeed")

# (message regex, why it is not worth showing). Matched against the start of the warning's text.
QUIET_WARNINGS: tuple[tuple[str, str], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated",
     "Lightning's own pytree helper against newer torch (torch deprecated LeafSpec); nothing to change here"),
    (r"Trying to infer the `batch_size`",
     "Lightning guesses the batch size of logged values from the batch dict; the guess is right for our batches"),
    (r"The `srun` command is available on your system but is not used",
     "printed on any machine with SLURM installed; launches are checked by training.strategy.check_launch"),
    (r"You defined a `validation_step` but have no `val_dataloader`",
     "a run without held-out data; training.run logs what is held out, the quality report says so"),
    (r"Checkpoint directory .* exists and is not empty",
     "every resumed run: a run folder's checkpoints are kept and rotated by training.checkpointing"),
)

HUB_LOCAL_LOAD_LINE = "Loading weights from local directory"

_third_party_level: int | None = None  # set by setup_logging: None means an application did not ask for it


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr in one format: ``level`` and above from this project, WARNING and above from libraries
    (INFO when ``level`` is DEBUG). Idempotent; call once at start-up, before heavy imports."""
    global _third_party_level
    _third_party_level = logging.INFO if level <= logging.DEBUG else logging.WARNING
    logging.basicConfig(level=_third_party_level, format=FORMAT, stream=sys.stderr)
    logging.getLogger(PROJECT_LOGGER).setLevel(level)
    for message, _why in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    adopt_library_loggers()


def adopt_library_loggers() -> None:
    """Route the loggers in :data:`LIBRARY_LOGGERS` through the root handler only, at the libraries' level.

    A no-op unless :func:`setup_logging` ran (a library user keeps the libraries' defaults). Idempotent: call it
    after importing a library that sets up its loggers at import (``build_trainer`` does, after Lightning)."""
    if _third_party_level is None:
        return
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # the library's console handler, not a file or test handler
                logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(_third_party_level)


@contextlib.contextmanager
def quiet_hub_loads() -> Iterator[None]:
    """Drop ``huggingface_hub``'s "Loading weights from local directory" line (a ``print`` per model loaded);
    anything else printed meanwhile is passed on to stdout."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        rest = "".join(line for line in buf.getvalue().splitlines(keepends=True)
                       if line.rstrip("\n") != HUB_LOCAL_LOAD_LINE)
        if rest:
            sys.stdout.write(rest)
