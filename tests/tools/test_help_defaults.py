"""Every tool's ``--help`` shows each option's default (issue 31, item 7), once, as one would type it.

The parsers are read as the tools build them: ``ArgumentParser.parse_args`` is replaced by one that
hands back the parser instead of parsing, so no tool needs a ``build_parser()`` for the test."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from tool_loader import TOOLS, load_tool

from vlprompt.cli import HelpFormatter

TOOL_NAMES = sorted(p.stem for p in TOOLS.glob("*.py"))


class _Built(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def _built_parser(name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser ``tools/<name>.py`` builds, caught as it is about to parse."""
    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Built(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    tool = load_tool(name)
    build = getattr(tool, "parse_args", None) or tool.main
    with pytest.raises(_Built) as caught:
        build([])
    return caught.value.parser


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and its subcommands' parsers (prepare_data.py verify)."""
    subs = [p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]
    return [parser, *[q for sub in subs for q in _parsers(sub)]]


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The lines ``parser --help`` writes for ``action``, without whitespace (lines wrap at hyphens too)."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return "".join(formatter.format_help().split())


def _has_default(action: argparse.Action) -> bool:
    """Whether ``--help`` should show ``action``'s default: an option taking a value whose default sets one."""
    default = action.default
    return (action.option_strings != [] and action.nargs != 0 and action.help is not argparse.SUPPRESS
            and default not in (None, False, argparse.SUPPRESS) and not (isinstance(default, list) and not default))


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_every_default_is_in_the_help(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parsers = _parsers(_built_parser(name, monkeypatch))
    assert all(p.formatter_class is HelpFormatter for p in parsers), f"{name}: not vlprompt.cli.HelpFormatter"
    missing = []
    for parser in parsers:
        for action in filter(_has_default, parser._actions):
            text = _help_of(parser, action)
            lowered = text.lower()
            values = action.default if isinstance(action.default, (list, tuple)) else [action.default]
            after = text[lowered.index("default"):] if "default" in lowered else ""
            if not all("".join(str(v).split()) in after for v in values) or lowered.count("default:") > 1:
                missing.append(f"{name}: {action.option_strings[0]} (default {action.default!r}): {text}")
    assert not missing, "\n".join(missing)


def test_the_formatter_skips_unset_defaults_and_stated_ones() -> None:
    parser = argparse.ArgumentParser(prog="t", formatter_class=HelpFormatter)
    parser.add_argument("--none", default=None, help="nothing set")
    parser.add_argument("--flag", action="store_true", help="a flag")
    parser.add_argument("--off", dest="on", action="store_false", help="a negative flag")
    parser.add_argument("--empty", nargs="+", default=[], help="an empty list")
    parser.add_argument("--stated", default="x", help="an option (default: x, said here)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--root", type=Path, default=Path("work_dirs/a"), help="where 100%% goes")
    text = " ".join(parser.format_help().split())
    assert text.count("default") == 3, text
    assert "--seeds SEEDS [SEEDS ...] (default: 1 2 3)" in text
    assert "where 100% goes (default: work_dirs/a)" in text
    assert "None" not in text and "False" not in text and "True" not in text and "[]" not in text
