"""The terminal of a run (:mod:`vlprompt.progress` says what it shows): mmengine's console handler
filtered, Python warnings routed to the log file, and the progress bar hook.

mmengine's ``MMLogger`` writes every record to a console handler and a file handler at the same
level. :func:`quiet_console` (called by :class:`~vlprompt.engine.runner.PromptRunner` for each
logger it builds) adds :class:`ConsoleFilter` to the console handler only: the log file keeps the
environment, the config, the hook table and every per-iteration line, while the terminal gets the
warnings and errors, less mmengine's deprecation notices. :func:`route_warnings` sends Python
warnings to the log file as well; deprecation warnings (``DeprecationWarning``, ``FutureWarning``...)
go there only. ``--verbose`` / ``VLPROMPT_VERBOSE=1`` leaves mmengine's console as it is.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from typing import Any

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.registry import HOOKS

from ..progress import BAR_INTERVAL, ProgressWriter, bar_disabled, progress_file, stage_label, verbose

LOG_ONLY = "vlprompt_log_only"
"""A log record with this attribute set (``extra={LOG_ONLY: True}``) goes to the log file only."""
CONSOLE = "vlprompt_console"
"""An INFO record with this attribute set (``extra={CONSOLE: True}``) is shown on a quiet console too."""
DEPRECATION_NOTICE = re.compile(r"deprecat", re.IGNORECASE)
"""mmengine's notices about its own API (``"FileClient" will be deprecated``): log file only."""
DEPRECATION_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
"""Python warnings that go to the log file only: they concern library code, not the user's run."""
MAX_PENDING = 200
"""Python warnings kept for the first log file when they come before any runner has one."""


class ConsoleFilter(logging.Filter):
    """What a quiet console shows of mmengine's log: warnings and errors, not deprecation notices
    nor INFO records (the log file has them all), except records marked :data:`CONSOLE`."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        if getattr(record, LOG_ONLY, False):
            return False
        if record.levelno >= logging.ERROR:
            return True
        if record.levelno < logging.WARNING:
            return bool(getattr(record, CONSOLE, False))
        return not DEPRECATION_NOTICE.search(record.getMessage())


def _console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
            and not isinstance(h, logging.FileHandler)]


def quiet_console(logger: MMLogger) -> MMLogger:
    """Filter ``logger``'s console handler with :class:`ConsoleFilter` (unless :func:`verbose`), and
    route Python warnings to the log file (:func:`route_warnings`); a log file that finds the disk
    full stops the run (:func:`stop_on_full_disk`). Idempotent; returns ``logger``."""
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            stop_on_full_disk(handler)
    if verbose():
        return logger
    for handler in _console_handlers(logger):
        if not any(isinstance(f, ConsoleFilter) for f in handler.filters):
            handler.addFilter(ConsoleFilter())
    route_warnings()
    _flush_pending(logger)
    return logger


def stop_on_full_disk(handler: logging.FileHandler) -> None:
    """Make a full disk or quota while ``handler`` writes its log file raise
    :class:`~vlprompt.io.DiskFullError` naming the file, instead of :mod:`logging`'s default of printing a
    traceback and going on training without a log. Other errors are handled as before."""
    if getattr(handler, "_stops_on_full_disk", False):
        return
    default = handler.handleError

    def handle_error(record: logging.LogRecord) -> None:
        import sys

        from ..io import DISK_FULL_ERRNOS, DiskFullError

        err = sys.exc_info()[1]
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(handler.baseFilename, err.errno, "free some space and rerun with --resume") from err
        default(record)

    handler.handleError = handle_error  # type: ignore[method-assign]
    handler._stops_on_full_disk = True  # type: ignore[attr-defined]


_pending: list[str] = []


def _log_file_logger() -> MMLogger | None:
    """The newest MMLogger that writes a log file, if any."""
    if not MMLogger._instance_dict:
        return None
    logger = MMLogger.get_current_instance()
    return logger if any(isinstance(h, logging.FileHandler) for h in logger.handlers) else None


def _flush_pending(logger: MMLogger) -> None:
    while _pending:
        logger.warning(_pending.pop(0), extra={LOG_ONLY: True})


def route_warnings() -> None:
    """Send every Python warning to the current run's log file too; show on the terminal only those
    that are not :data:`DEPRECATION_CATEGORIES`. Installed once; ``warnings.catch_warnings`` (and
    so pytest) restores the previous handler when its block ends."""
    previous = warnings.showwarning
    if getattr(previous, "_vlprompt_routed", False):
        return

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                    line: str | None = None) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        logger = _log_file_logger()
        if logger is not None:
            logger.warning(text, extra={LOG_ONLY: True})
        elif len(_pending) < MAX_PENDING:
            _pending.append(text)
        if not issubclass(category, DEPRECATION_CATEGORIES):
            previous(message, category, filename, lineno, file, line)

    showwarning._vlprompt_routed = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


@HOOKS.register_module(force=True)
class ProgressHook(Hook):
    """A progress bar over the training iterations (its description says the epoch, its postfix the
    loss) and over the test and validation batches, on stderr of the main process
    (:func:`vlprompt.progress.bar_disabled`); the same state goes to the progress file a sweep
    asked for (:class:`vlprompt.progress.ProgressWriter`), with the path of the run's log file."""

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self._bar: Any = None
        self._writer = ProgressWriter()
        self._state: dict[str, Any] = {}
        self._shown = 0.0
        self._paused: tuple[Any, dict[str, Any]] | None = None  # the training bar and state during validation

    def _start(self, runner, stage: str, total: int | None, done: int = 0, **extra: Any) -> None:
        if not is_main_process():
            return
        from tqdm import tqdm

        self._close()
        self._state = {"stage": stage, "done": done, "total": total, "log": getattr(runner.logger, "log_file", None),
                       **extra}
        disabled = True if self._writer.path is not None else bar_disabled()  # a sweep shows the bar instead
        self._bar = tqdm(total=total, initial=done, desc=stage_label(self._state), unit="it", dynamic_ncols=True,
                         mininterval=BAR_INTERVAL, leave=None if stage == "train" else False, disable=disabled)
        self._writer.write(self._state, force=True)

    def _step(self, done: int, **extra: Any) -> None:
        if self._bar is None:
            return
        self._state.update(done=done, **extra)
        if "epoch" in extra:
            self._bar.set_description(stage_label(self._state), refresh=False)
        self._bar.update(done - self._bar.n)
        self._writer.write(self._state, force=done == self._state.get("total"))

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # training: a bar over every iteration of the run, the epoch in its description
    def before_train(self, runner) -> None:  # noqa: D102
        from mmengine.runner import EpochBasedTrainLoop

        epochs = runner.max_epochs if isinstance(runner.train_loop, EpochBasedTrainLoop) else None
        extra = {"epoch": runner.epoch + 1, "epochs": epochs} if epochs else {}
        self._start(runner, "train", runner.max_iters, runner.iter, **extra)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:  # noqa: D102
        if self._bar is None:
            return
        extra = {"epoch": min(runner.epoch + 1, self._state["epochs"])} if self._state.get("epochs") else {}
        now = time.monotonic()
        if outputs and "loss" in outputs and now - self._shown >= BAR_INTERVAL:
            self._shown = now
            loss = outputs["loss"]
            loss = float(loss.detach() if hasattr(loss, "detach") else loss)
            extra["loss"] = round(loss, 4)
            self._bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
        self._step(runner.iter + 1, **extra)

    def after_train(self, runner) -> None:  # noqa: D102
        self._close()

    # testing and validation: a bar over the batches
    def _eval_start(self, runner, stage: str, loader) -> None:
        subsample = getattr(getattr(loader, "dataset", None), "subsample", None)
        self._start(runner, f"{stage} {subsample}" if subsample else stage, len(loader))

    def before_test_epoch(self, runner) -> None:  # noqa: D102
        self._eval_start(runner, "test", runner.test_dataloader)

    def after_test_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:  # noqa: D102
        self._step(batch_idx + 1)

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:  # noqa: D102
        self._close()

    def before_val_epoch(self, runner) -> None:  # noqa: D102
        if self._bar is not None and self._state.get("stage") == "train":
            self._paused, self._bar = (self._bar, dict(self._state)), None  # the training bar stays below
        self._eval_start(runner, "val", runner.val_dataloader)

    def after_val_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:  # noqa: D102
        self._step(batch_idx + 1)

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:  # noqa: D102
        self._close()
        if self._paused is not None:
            (self._bar, self._state), self._paused = self._paused, None
            self._writer.write(self._state, force=True)


__all__ = ["CONSOLE", "LOG_ONLY", "ConsoleFilter", "ProgressHook", "progress_file", "quiet_console",
           "route_warnings"]
