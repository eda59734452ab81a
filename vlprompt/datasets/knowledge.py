"""Class descriptions ("knowledge"): one description source per dataset, shared by every learner.

A description source maps class names to sentences about them. It is read from a file the user
provides (under the data root or by path) in one of the formats the field already uses:

* a JSON object ``{class name: sentence}`` or ``{class name: [sentence, ...]}`` (the toy world's
  ``knowledge.json``, CuPL prompts, Menon & Vondrick's "visual descriptors");
* ELEVATER's knowledge files (``<dataset>_knowledge.tsv``, shipped by MVLPT for 9 of the 11
  benchmarks): despite the suffix, a JSON list of records ``{"classname": ..., "def_wiki": ...,
  "def_wn": ..., "path_wn": [...]}`` (Wiktionary definition, WordNet definition, WordNet hypernym
  path), or ``{"classname": ..., "gpt3": [...]}`` for the GPT-3 files; ``field`` picks the text;
* a plain tab-separated file, ``class name<TAB>sentence[<TAB>sentence ...]`` per line.

Files are parsed as data only (``json`` / ``csv``); nothing read can run code. Class names are
matched the way the dataset names them: exactly first, then ignoring case, underscores and runs
of spaces (``sea_lion`` = ``Sea Lion``). An empty description counts as missing. Classes without a
description are reported (:class:`Coverage`), never silently skipped: a source that names no class
of a task is an error, one that misses some is a warning naming the file and the first missing
class, raised when a learner is built, before training starts.

The toy world's ``knowledge.json`` (written with every toy dataset) is the embedded default:
:func:`dataset_descriptions` finds it by dataset name, as it finds ``knowledge.json`` /
``knowledge.tsv`` in a benchmark's folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = [
    'ELEVATER_FIELDS', 'KNOWLEDGE_FILES', 'Coverage', 'Descriptions', 'KnowledgeError', 'KnowledgeWarning',
    'check_coverage', 'dataset_descriptions', 'find_knowledge_file', 'load_descriptions', 'match_key',
    'STOP_WORDS', 'key_words', 'leading_clause', 'parse_descriptions', 'resolve_descriptions', 'split_sentences',
    'words_of',
]

#: the text fields of ELEVATER's knowledge records, in the order a missing ``field`` tries them
ELEVATER_FIELDS: tuple[str, ...] = ('def_wiki', 'def_wn', 'gpt3', 'path_wn')
#: file names looked for in a dataset's folder when no file is given
KNOWLEDGE_FILES: tuple[str, ...] = ('knowledge.json', 'knowledge.tsv')


class KnowledgeError(UserError, ValueError):
    """A description source that cannot be used: unreadable, not JSON/TSV, or naming no class."""


class KnowledgeWarning(UserWarning):
    """Some classes of a task have no description in the source."""


def match_key(name: str) -> str:
    """The form class names are compared in: case-folded, underscores as spaces, spaces collapsed."""
    return ' '.join(name.replace('_', ' ').split()).casefold()


@dataclass
class Coverage:
    """Which classes of a task a description source covers."""

    source: str
    classes: int
    missing: list[str] = field(default_factory=list)

    @property
    def covered(self) -> int:
        return self.classes - len(self.missing)

    def summary(self) -> str:
        """``12/47 classes described (first missing: 'banded')`` style one-liner."""
        text = f'{self.covered}/{self.classes} classes described by {self.source}'
        if self.missing:
            text += f' (first missing: {self.missing[0]!r})'
        return text


@dataclass
class Descriptions:
    """Descriptions from one source: ``entries`` keeps the class names as the file spells them."""

    source: str
    entries: dict[str, list[str]]
    _index: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.entries = {k: [s for s in (t.strip() for t in v) if s] for k, v in self.entries.items()}
        for key in self.entries:
            self._index.setdefault(match_key(key), key)

    def lookup(self, name: str) -> list[str]:
        """The sentences for class ``name`` (``[]`` when the source has none or only empty ones)."""
        if name in self.entries:
            return list(self.entries[name])
        key = self._index.get(match_key(name))
        return list(self.entries[key]) if key is not None else []

    def coverage(self, class_names: Iterable[str]) -> Coverage:
        names = list(class_names)
        return Coverage(self.source, len(names), [n for n in names if not self.lookup(n)])

    def for_classes(self, class_names: Iterable[str]) -> dict[str, list[str]]:
        return {n: self.lookup(n) for n in class_names}


# ------------------------------------------------------------------------------------------ parsing
def _as_sentences(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise KnowledgeError(f'{where}: expected a sentence or a list of sentences, got {type(value).__name__}')


def _from_records(records: list, path: str, fld: str | None) -> dict[str, list[str]]:
    if not all(isinstance(r, dict) for r in records):
        raise KnowledgeError(f'{path}: a JSON list must hold records {{"classname": ..., "<field>": ...}} '
                             "(ELEVATER's knowledge format)")
    keys = set().union(*(r.keys() for r in records)) if records else set()
    if records and 'classname' not in keys:
        raise KnowledgeError(f'{path}: records have no "classname" key (keys: {sorted(keys)})')
    if fld is None:
        fld = next((f for f in ELEVATER_FIELDS if f in keys), None)
        if fld is None:
            raise KnowledgeError(f'{path}: records have none of the text fields {ELEVATER_FIELDS}; pass field=')
    elif records and fld not in keys:
        raise KnowledgeError(f'{path}: records have no field {fld!r} (they have {sorted(keys - {"classname"})})')
    out: dict[str, list[str]] = {}
    for i, rec in enumerate(records):
        name = rec.get('classname')
        if not isinstance(name, str):
            raise KnowledgeError(f'{path}: record {i} has no string "classname"')
        value = rec.get(fld)
        if fld == 'path_wn' and isinstance(value, list):  # a hypernym chain reads as one phrase
            value = ' '.join(v for v in value[:3] if isinstance(v, str))
        out.setdefault(name, []).extend(_as_sentences(value, f'{path}: {name!r}.{fld}'))
    return out


def _from_tsv(text: str, path: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text), delimiter='\t'), start=1):
        if not row or not ''.join(row).strip():
            continue
        if len(row) < 2:
            raise KnowledgeError(f'{path}: line {lineno} is not "class name<TAB>description" '
                                 f'(no tab in {row[0][:60]!r}); the file is neither JSON nor TSV')
        out.setdefault(row[0].strip(), []).extend(row[1:])
    return out


def parse_descriptions(text: str, path: str, fld: str | None = None) -> dict[str, list[str]]:
    """Entries of a description file's ``text`` (JSON object, ELEVATER JSON records, or TSV lines)."""
    stripped = text.lstrip('\ufeff').strip()
    if not stripped:
        raise KnowledgeError(f'{path}: the file is empty')
    if stripped[0] in '{[':
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise KnowledgeError(f'{path}: not valid JSON ({err})') from None
        except RecursionError:  # hostile or broken nesting: one line, not Python's recursion traceback
            raise KnowledgeError(f'{path}: JSON nested too deeply to read (descriptions are one or two levels '
                                 'deep)') from None
        if isinstance(data, dict):
            if fld is not None:
                raise KnowledgeError(f'{path}: field={fld!r} applies to record lists, this is a '
                                     '{class: description} object')
            return {str(k): _as_sentences(v, f'{path}: {k!r}') for k, v in data.items()}
        if isinstance(data, list):
            return _from_records(data, path, fld)
        raise KnowledgeError(f'{path}: expected a JSON object or list, got {type(data).__name__}')
    return _from_tsv(stripped, path)


def load_descriptions(path: str | os.PathLike[str], field: str | None = None) -> Descriptions:
    """Read a description file (any of the formats of the module docstring)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise KnowledgeError(f'knowledge file not found: {p}') from None
    except (OSError, UnicodeDecodeError) as err:
        raise KnowledgeError(f'cannot read knowledge file {p}: {err}') from None
    entries = parse_descriptions(text, str(p), field)
    if not entries:
        raise KnowledgeError(f'{p}: no class descriptions in the file')
    return Descriptions(str(p), entries)


# ------------------------------------------------------------------------------------------ sources
def find_knowledge_file(dataset_dir: str | os.PathLike[str]) -> Path | None:
    """The conventional description file in a dataset's folder (:data:`KNOWLEDGE_FILES`), if any."""
    for name in KNOWLEDGE_FILES:
        path = Path(dataset_dir) / name
        if path.is_file():
            return path
    return None


def dataset_descriptions(name: str, data_root: str | os.PathLike[str] | None = None) -> Descriptions:
    """The default description source of dataset ``name``.

    A toy dataset's ``knowledge.json`` (embedded: taken from the toy world's definition when the
    dataset has not been generated yet); for a benchmark, ``knowledge.json`` / ``knowledge.tsv``
    in its folder under the data root.
    """
    from .builder import canonical_name, get_dataset_class
    from .toyworld import TOY_DATASETS, toy_knowledge, toy_root

    if name in TOY_DATASETS:
        path = toy_root() / name / 'knowledge.json'
        if path.is_file():
            return load_descriptions(path)
        return Descriptions(f'{name} (embedded knowledge)', {k: [v] for k, v in toy_knowledge(name).items()})
    from .base import resolve_data_root

    cls = get_dataset_class(canonical_name(name))
    folder = resolve_data_root(data_root) / cls.dataset_dir
    path = find_knowledge_file(folder)
    if path is None:
        raise KnowledgeError(f'[{cls.name}] no description file in {folder}: expected one of '
                             f'{", ".join(KNOWLEDGE_FILES)} (e.g. ELEVATER\'s <dataset>_knowledge.tsv copied there) '
                             'or give knowledge=dict(file=...)')
    return load_descriptions(path)


def resolve_descriptions(spec: Any, data_root: str | os.PathLike[str] | None = None) -> Descriptions:
    """A :class:`Descriptions` from a learner's ``knowledge`` setting.

    ``spec`` is a file path (relative paths: to the data root, else to the working directory), or a
    dict with one of ``file`` (plus optional ``field`` and ``data_root``), ``dataset`` (its default
    source, :func:`dataset_descriptions`) or ``descriptions`` (``{class: text or [texts]}`` inline).
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = {'file': os.fspath(spec)}
    if not isinstance(spec, Mapping):
        raise KnowledgeError(f'knowledge: expected a path or a dict with file / dataset / descriptions, got {spec!r}')
    spec = dict(spec)
    data_root = spec.pop('data_root', None) or data_root
    kinds = [k for k in ('file', 'dataset', 'descriptions') if spec.get(k) is not None]
    if len(kinds) != 1:
        raise KnowledgeError(f'knowledge: give exactly one of file, dataset, descriptions (got {sorted(spec)})')
    unknown = set(spec) - {'file', 'dataset', 'descriptions', 'field'}
    if unknown:
        raise KnowledgeError(f'knowledge: unknown key(s) {sorted(unknown)} (expected file, field, dataset, '
                             'descriptions, data_root)')
    if kinds == ['descriptions']:
        given = spec['descriptions']
        if not isinstance(given, Mapping):
            raise KnowledgeError('knowledge.descriptions must be a {class: text or [texts]} dict')
        return Descriptions('inline descriptions',
                            {str(k): _as_sentences(v, f'knowledge.descriptions[{k!r}]') for k, v in given.items()})
    if kinds == ['dataset']:
        return dataset_descriptions(spec['dataset'], data_root)
    path = Path(spec['file']).expanduser()
    if not path.is_absolute():
        from .base import DATA_ENV

        root = data_root or os.environ.get(DATA_ENV)
        if root and (Path(root) / path).exists():
            path = Path(root) / path
        elif not path.exists():
            where = f' under the data root {root}' if root else f' (and no data root: ${DATA_ENV} is unset)'
            raise KnowledgeError(f'knowledge file not found: {spec["file"]}{where}')
    return load_descriptions(path, spec.get('field'))


def check_coverage(descriptions: Descriptions, class_names: Sequence[str], what: str = 'the task',
                   on_missing: str = 'warn') -> Coverage:
    """Coverage of ``class_names``; an error when no class is described, else a warning (or an
    error with ``on_missing='error'``) naming the source and the first missing class."""
    if on_missing not in ('warn', 'error', 'ignore'):
        raise ValueError(f"on_missing must be 'warn', 'error' or 'ignore', got {on_missing!r}")
    cov = descriptions.coverage(class_names)
    if cov.classes and cov.covered == 0:
        raise KnowledgeError(f'{descriptions.source} describes none of the {cov.classes} classes of {what} '
                             f'(first: {class_names[0]!r}; names are matched ignoring case and underscores)')
    if cov.missing and on_missing != 'ignore':
        message = (f'{descriptions.source}: {len(cov.missing)} of the {cov.classes} classes of {what} have no '
                   f'description, first {cov.missing[0]!r} (empty descriptions count as missing)')
        if on_missing == 'error':
            raise KnowledgeError(message)
        warnings.warn(message, KnowledgeWarning, stacklevel=3)
    return cov


_SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=[A-Z0-9])')


def split_sentences(text: str) -> list[str]:
    """A description cut into sentences (at ``. `` / ``! `` / ``? `` before a capital or digit)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


# ------------------------------------------------------------------------------- key information
#: words a key-word list never keeps (function words and the filler of encyclopedic definitions)
STOP_WORDS: frozenset[str] = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each either etc few for from further had has have having he
her here hers herself him himself his how i if in into is it its itself just kind known may me might more most
much must my myself no nor not now of off often on once one only or other our ours ourselves out over own same
she should so some such than that the their theirs them themselves then there these they this those through to
too type under until up usually very was we were what when where which while who whom why will with within would
you your yours yourself yourselves something someone used use using many various typically especially
""".split())
_WORD = re.compile(r"[a-z][a-z'\-]*[a-z]|[a-z]")


def words_of(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters, inner hyphens and apostrophes)."""
    return _WORD.findall(text.casefold())


def leading_clause(text: str) -> str:
    """The start of a description up to its first clause break (``,;:()`` or a sentence end)."""
    return re.split(r'[,;:()]|(?<=[.!?])\s|[.!?]$', text.strip(), maxsplit=1)[0].strip()


def key_words(descriptions: Mapping[str, Sequence[str]], n: int) -> dict[str, list[str]]:
    """The ``n`` key words of each class's description by a TF-IDF score across the given classes.

    A class's document is all its sentences. Term frequency is a word's count over the document's
    word count; inverse document frequency is ``log((1 + C) / (1 + df)) + 1`` over the ``C``
    classes given (smoothed, so a word every class shares ranks last but is not forbidden). Stop
    words and the words of the class name itself are never key words. Ties go to the earlier word;
    the kept words are returned in the order they first appear in the description, so they read as
    a phrase.
    """
    if n < 1:
        raise ValueError(f'the number of key words must be >= 1, got {n}')
    docs: dict[str, list[str]] = {}
    for name, sentences in descriptions.items():
        own = set(words_of(name.replace('_', ' ')))
        docs[name] = [w for w in words_of(' '.join(sentences)) if w not in STOP_WORDS and w not in own]
    df: dict[str, int] = {}
    for words in docs.values():
        for w in set(words):
            df[w] = df.get(w, 0) + 1
    total = len(docs)
    out = {}
    for name, words in docs.items():
        if not words:
            out[name] = []
            continue
        first: dict[str, int] = {}
        counts: dict[str, int] = {}
        for i, w in enumerate(words):
            first.setdefault(w, i)
            counts[w] = counts.get(w, 0) + 1
        score = {w: c / len(words) * (math.log((1 + total) / (1 + df[w])) + 1) for w, c in counts.items()}
        top = sorted(score, key=lambda w: (-score[w], first[w]))[:n]
        out[name] = sorted(top, key=first.__getitem__)
    return out
