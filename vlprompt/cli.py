"""What every command-line tool in ``tools/`` shares: one-line errors and a fast start.

A tool's ``if __name__ == "__main__":`` calls :func:`run_tool` with its ``main``. An expected
error, one that means the input is wrong (any :class:`~vlprompt.errors.UserError`: a missing
config or checkpoint, an unreadable file, no data root, an unknown name, a bad ``--cfg-options``
value, a work dir in use; or a ``SystemExit`` carrying a message, as the sweeps raise), is printed
as one line on stderr, ``error: <message>``, and the tool exits with :data:`EXIT_USER_ERROR` (2,
the status argparse gives a usage error). Ctrl-C prints ``interrupted`` with what to do next (the
hint a tool attached with :func:`vlprompt.errors.hint_on_interrupt`) and exits with 130. Any
other exception is a bug in vlprompt and keeps its traceback. ``--debug`` (every tool takes it) or
``VLPROMPT_DEBUG=1`` shows the traceback of the expected errors too, and is passed on to the
processes a sweep starts.

Tools parse their arguments before they import torch, open_clip or mmengine, so ``--help`` and an
argument error answer at once; this module imports nothing heavy. ``--cfg-options`` is therefore
collected as raw ``key=value`` strings (:func:`add_cfg_options`) and converted by
:func:`cfg_options` after parsing, with mmengine's own ``DictAction`` rules.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from . import names
from .errors import ConfigNotFoundError, UserError

DEBUG_ENV = "VLPROMPT_DEBUG"
"""Set to 1 to see the traceback of expected errors (as ``--debug`` does)."""
DEBUG_FLAG = "--debug"
EXIT_USER_ERROR = 2
"""Exit status of an expected error (the one argparse uses for a usage error)."""
EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, as a shell reports it)."""
DATA_ENV = "VLPROMPT_DATA"
"""The data root's environment variable (``vlprompt.datasets.DATA_ENV``, named here without importing torch)."""
ADDABLE_KEYS = ("load_from", "resume", "data_root", "work_dir", "experiment_name")
"""Top-level keys ``--cfg-options`` may add to a config that lacks them (``vlprompt.engine.config.ADDABLE_KEYS``)."""

CFG_OPTIONS_HELP = (
    "override config keys: key=value ... (dotted keys reach into dicts and lists: optim_wrapper.optimizer.lr=0.01; "
    "values are read as numbers, True/False, None, lists a,b or [a,b], tuples (a,b), else strings). A key the config "
    "does not have may be added only at the top level (" + ", ".join(ADDABLE_KEYS) + ") or inside a dict whose "
    "'type' takes it as an argument (optim_wrapper.optimizer.nesterov=True for SGD, "
    "train_dataloader.dataset.transform=test for the dataset); any other key, or a value of another kind than the "
    "config's, is refused before anything runs, naming the closest keys"
)
SWEEP_CFG_OPTIONS_HELP = "key=value ... passed on to every run (tools/train.py --help: what may be changed or added)"
OVERWRITE_HELP = ("retrain finished runs whose recorded config differs from this sweep's (matching ones are still "
                  "reused)")

T = TypeVar("T")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every tool's ``--help``: the module docstring as written, and each option's default.

    A default is shown as one would type it (``--seeds 1 2 3`` shows ``(default: 1 2 3)``), also for an
    option without a help string (argparse's own formatter skips those). Not shown: a default of
    ``None``, ``False`` or an empty value (nothing is set), a flag's (``store_true``...), and a help
    string that already speaks of its default (``default: $VLPROMPT_DATA``)."""

    def _format_action(self, action: argparse.Action) -> str:
        if not (action.help or "").strip() and _shown_default(action) is not None:
            action = copy.copy(action)  # argparse writes no help line at all for an action without help
            action.help = self._get_help_string(action)
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        shown = _shown_default(action)
        if shown is None:
            return action.help
        help = (action.help or "").strip()
        return (help + " " if help else "") + "(default: " + shown.replace("%", "%%") + ")"


def _shown_default(action: argparse.Action) -> str | None:
    """``action``'s default as its help shows it, or ``None`` when the help should not show one."""
    default = action.default
    if (default is None or default is False or default is argparse.SUPPRESS or action.nargs == 0
            or "default" in (action.help or "").lower()):
        return None
    if not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)):
        return None  # a required positional: its default is never used
    if isinstance(default, (list, tuple)):
        return " ".join(str(value) for value in default) or None
    return str(default) or None


class UsageError(UserError, ValueError):
    """A command-line value a tool refuses after parsing (an unknown dataset or protocol name...)."""


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether ``--debug`` is among ``argv`` (default: ``sys.argv``) or ``$VLPROMPT_DEBUG`` is set."""
    args = sys.argv[1:] if argv is None else argv
    if DEBUG_FLAG in args:
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (read by :func:`run_tool`) to a tool's parser."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the traceback of expected errors too (or set {DEBUG_ENV}=1)")


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--verbose``: mmengine's full console output (the environment, the config, the hook table
    and every log line; the log file has them either way). ``VLPROMPT_VERBOSE=1`` does the same."""
    parser.add_argument("--verbose", action="store_true",
                        help="show mmengine's full log on the terminal too (environment, config, hooks, every "
                             "logged line), as VLPROMPT_VERBOSE=1 does; by default they go to the log file only")


def _key_value(text: str) -> str:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return text


def add_cfg_options(parser: argparse.ArgumentParser, help: str = CFG_OPTIONS_HELP, default: Any = None) -> None:
    """Add ``--cfg-options key=value ...``, collected as strings (repeating the flag adds to the list)."""
    parser.add_argument("--cfg-options", nargs="+", action="extend", type=_key_value, default=default,
                        metavar="KEY=VALUE", help=help)


def add_run_selection(parser: argparse.ArgumentParser) -> None:
    """A run named by its config path, or by ``--method`` and ``--dataset`` (composed: no file needed)."""
    parser.add_argument("config", nargs="?", help="config file, or configs/<method>/<dataset>.py (composed when no "
                                                  "such file exists); or give --method and --dataset")
    parser.add_argument("--method", help="a method or variant (a folder of configs/ with _method.py: coop, "
                                         "gram/maple, ...), with --dataset instead of a config path")
    parser.add_argument("--dataset", help="any registered dataset name or alias (dtd, toy-shapes, imagenet, ...)")
    parser.add_argument("--overlay", action="append", default=[], metavar="NAME",
                        help="an overlay of configs/_overlays_/ on the composed run (cross_dataset, few_shot); "
                             "repeatable")


def run_selection(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[str, list[str]]:
    """The config path and overlays that ``args`` name, the path checked and with its dataset's one name
    (:func:`config_argument`); a usage error when they name none or both."""
    if (args.method is None) != (args.dataset is None):
        parser.error("--method and --dataset go together")
    if args.method and args.config:
        parser.error("give a config path or --method/--dataset, not both")
    if args.method:
        method = method_argument(args.method)
        dataset = dataset_arguments([args.dataset], "--dataset")[0]
        return config_argument(os.path.join("configs", method, f"{names.leaf_name(dataset)}.py")), list(args.overlay)
    if not args.config:
        parser.error("a config path or --method and --dataset are required")
    if args.overlay:
        parser.error("--overlay goes with --method and --dataset")
    return config_argument(args.config), []


def config_argument(path: str) -> str:
    """A tool's config path, checked right after parsing (before torch is imported): ``path`` if it is a
    file, else the composed run it names, spelled with its dataset's one name (``configs/coop/toy-shapes.py``
    is ``configs/coop/toy_shapes.py``); a :class:`~vlprompt.errors.ConfigNotFoundError` naming the closest
    config files and composable runs when it names neither (:func:`vlprompt.names.check_config_path`)."""
    return names.check_config_path(path)


def dataset_arguments(datasets: Sequence[str], option: str = "--datasets") -> list[str]:
    """The datasets a tool's ``option`` names, each as its one name (the reader's registry name:
    ``toy_shapes`` and ``Toy-Shapes`` are ``toy-shapes``) and once, in order; so every spelling makes
    the same run folder, config path and table row. An unknown name is a :class:`UsageError` naming the
    closest datasets. Checked before torch is imported (:data:`vlprompt.names.DATASET_SPELLINGS`)."""
    out = []
    for name in datasets:
        try:
            out.append(names.canonical_dataset(name))
        except names.UnknownNameError as err:
            raise UsageError(f"{option} {name}: {err}") from None
    return list(dict.fromkeys(out))


def device_argument(device: str | None, option: str = "--device") -> str | None:
    """A tool's ``--device`` as given (``None``: the tool's default), checked right after parsing: a
    :class:`UsageError` naming it when it is not a device (``gpu``) or one this machine lacks (``cuda:7``
    with two GPUs, ``cuda`` with none), rather than a traceback from the first tensor moved there.
    ``cpu`` is answered without importing torch."""
    if device is None or device == "cpu":
        return device
    import torch

    try:
        where = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{option} {device}: not a device (cpu, cuda, cuda:N, mps)") from None
    if where.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"{option} {device}: this machine has no CUDA device (use --device cpu)")
        if where.index is not None and where.index >= count:
            have = "1 CUDA device (cuda:0)" if count == 1 else f"{count} CUDA devices (cuda:0 to cuda:{count - 1})"
            raise UsageError(f"{option} {device}: this machine has {have}")
    elif where.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"{option} {device}: this machine has no MPS device (use --device cpu)")
    return device


def method_argument(method: str, option: str = "--method") -> str:
    """A tool's method as the folder of ``configs/`` that holds its ``_method.py`` (``CoOp`` and
    ``configs/coop/`` are ``coop``; variants such as ``gram/coop`` too); an unknown one is a
    :class:`UsageError` naming the closest methods and listing them all."""
    try:
        return names.canonical_method(method)
    except ConfigNotFoundError as err:
        raise UsageError(f"{option} {method}: {err}") from None


def add_sweep_arguments(parser: argparse.ArgumentParser, work_root: str, data_root_help: str | None = None,
                        overwrite_help: str = OVERWRITE_HELP) -> None:
    """The arguments every sweep tool ends with: ``--work-root`` (default ``work_root``), ``--data-root``,
    ``--cfg-options`` passed on to every run, ``--overwrite`` and ``--debug``; see :func:`sweep_options`."""
    parser.add_argument("--work-root", type=Path, default=Path(work_root))
    parser.add_argument("--data-root", default=None, help=data_root_help)
    add_cfg_options(parser, default=[], help=SWEEP_CFG_OPTIONS_HELP)
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    add_debug_argument(parser)
    from .launch import add_launcher_arguments  # the standard library only, until a launcher runs

    add_launcher_arguments(parser)


def sweep_options(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` options a sweep passes to every run: its ``--cfg-options``, then ``data_root``
    from ``--data-root`` when given."""
    return list(args.cfg_options) + ([f"data_root={args.data_root}"] if args.data_root else [])


def cfg_options(options: Sequence[str] | None) -> dict[str, Any] | None:
    """``key=value`` strings as the dict mmengine's ``DictAction`` makes of them (``None`` for none).

    Imports mmengine: call it after the arguments are parsed."""
    if not options:
        return None
    from mmengine.config import DictAction

    for option in options:
        _key_value(option)
    namespace = argparse.Namespace()
    DictAction(["--cfg-options"], "cfg_options")(argparse.ArgumentParser(), namespace, list(options))
    return namespace.cfg_options


def one_line(message: str) -> str:
    """``message`` on one line: lines joined by ``; `` (by a space before a continuation such as ``-> hint``)."""
    out = ""
    for line in (part.strip() for part in str(message).splitlines()):
        if not line:
            continue
        if out:
            out += " " if not line[0].isalnum() else "; "
        out += line
    return out


def error_message(err: BaseException) -> str:
    """The message of an expected error, without the quotes ``str(KeyError)`` adds."""
    text = err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else str(err)
    return one_line(text) or type(err).__name__


def run_tool(main: Callable[[], T], argv: Sequence[str] | None = None) -> T:
    """Call ``main()`` and return what it returns; an expected error exits with one line (see the module)."""
    debug = debug_requested(argv)
    if debug:
        os.environ[DEBUG_ENV] = "1"  # the runs a sweep starts show their tracebacks in their logs too
    try:
        return main()
    except KeyboardInterrupt as err:
        if debug:
            raise
        from .errors import INTERRUPT_HINT

        hint = getattr(err, INTERRUPT_HINT, None)
        print(f"interrupted; {hint}" if hint else "interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as err:
        if not isinstance(err.code, str):  # argparse, sys.exit(status): already said what it had to say
            raise
        if debug:
            import traceback

            traceback.print_exc()
        _fail(err)
    except UserError as err:
        if debug:
            raise
        _fail(err)
    except OSError as err:  # a full disk met where no vlprompt writer named the file (a library's own writes)
        from .io import DISK_FULL_ERRNOS, DiskFullError

        if debug or err.errno not in DISK_FULL_ERRNOS:
            raise
        _fail(DiskFullError(err.filename, err.errno) if err.filename else _unnamed_full_disk(err))


def _unnamed_full_disk(err: OSError) -> UserError:
    from .io import space_left

    return UserError(f"{os.strerror(err.errno)} while writing (the file was not named; {space_left(os.getcwd())} free "
                     f"in {os.getcwd()}); free some space and rerun")


def _fail(err: BaseException) -> NoReturn:
    sys.stdout.flush()
    print(f"error: {error_message(err)}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
