"""Class descriptions: the file formats, name matching, coverage, key information and bad files."""

import json

import pytest

from vlprompt.datasets.knowledge import (
    Descriptions,
    KnowledgeError,
    KnowledgeWarning,
    check_coverage,
    dataset_descriptions,
    find_knowledge_file,
    key_words,
    leading_clause,
    load_descriptions,
    resolve_descriptions,
    split_sentences,
)
from vlprompt.datasets.verify import format_reports, verify_dataset

CLASSES = ["sea_lion", "Golden Retriever", "annual crop land"]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_json_object_of_sentences_or_lists_matches_names_as_the_dataset_spells_them(tmp_path):
    path = _write(tmp_path, "k.json", json.dumps({
        "Sea Lion": "A marine mammal with flippers.",
        "golden_retriever": ["A dog with a golden coat.", "  ", "It retrieves game."],
        "annual crop land": "",
    }))
    d = load_descriptions(path)
    assert d.lookup("sea_lion") == ["A marine mammal with flippers."]  # case and underscores ignored
    assert d.lookup("Golden Retriever") == ["A dog with a golden coat.", "It retrieves game."]  # blank dropped
    assert d.lookup("annual crop land") == []  # an empty description is missing
    cov = d.coverage(CLASSES)
    assert (cov.classes, cov.covered, cov.missing) == (3, 2, ["annual crop land"])
    assert str(path) in cov.summary() and "'annual crop land'" in cov.summary()


def test_elevater_knowledge_tsv_is_a_json_list_of_records_and_field_picks_the_text(tmp_path):
    records = [
        {"classname": "sea lion", "def_wiki": "A large seal.", "def_wn": "eared seal", "path_wn": ["seal", "mammal"]},
        {"classname": "golden retriever", "def_wiki": "", "def_wn": "an English breed", "path_wn": []},
    ]
    path = _write(tmp_path, "pets_knowledge.tsv", json.dumps(records))
    wiki = load_descriptions(path)  # default: the first text field present, def_wiki
    assert wiki.lookup("sea_lion") == ["A large seal."] and wiki.lookup("golden retriever") == []
    assert load_descriptions(path, field="def_wn").lookup("Golden Retriever") == ["an English breed"]
    assert load_descriptions(path, field="path_wn").lookup("sea lion") == ["seal mammal"]
    gpt = _write(tmp_path, "GPT3_pets.tsv", json.dumps([{"classname": "sea lion", "gpt3": ["one.", "two."]}]))
    assert load_descriptions(gpt).lookup("sea lion") == ["one.", "two."]
    cov = wiki.coverage(CLASSES)
    assert cov.covered == 1 and cov.missing == ["Golden Retriever", "annual crop land"]


def test_plain_tab_separated_lines(tmp_path):
    path = _write(tmp_path, "k.tsv", "sea lion\tA marine mammal.\tIt barks.\n\nannual_crop_land\tFields of crops.\n")
    d = load_descriptions(path)
    assert d.lookup("Sea_Lion") == ["A marine mammal.", "It barks."]
    assert d.lookup("annual crop land") == ["Fields of crops."]


@pytest.mark.parametrize("text, match", [
    ('{"sea lion": "x",', "not valid JSON"),
    ("sea lion has no tab here\n", "neither JSON nor TSV"),
    ("", "empty"),
    ('[{"name": "sea lion", "def_wiki": "x"}]', 'no "classname"'),
    ('{"sea lion": 3}', "sentence or a list"),
    ('[1, 2]', "must hold records"),
])
def test_bad_files_are_errors_naming_the_file(tmp_path, text, match):
    path = _write(tmp_path, "bad.json", text)
    with pytest.raises(KnowledgeError, match=match) as err:
        load_descriptions(path)
    assert str(path) in str(err.value)


def test_unknown_field_and_missing_file(tmp_path):
    path = _write(tmp_path, "k.tsv", json.dumps([{"classname": "a", "def_wiki": "x"}]))
    with pytest.raises(KnowledgeError, match="no field 'gpt3'"):
        load_descriptions(path, field="gpt3")
    with pytest.raises(KnowledgeError, match="not found"):
        load_descriptions(tmp_path / "absent.json")


def test_coverage_errors_when_no_class_matches_and_warns_naming_the_first_missing():
    d = Descriptions("k.json", {"sea lion": ["A marine mammal."], "cat": ["A pet."]})
    with pytest.raises(KnowledgeError, match=r"k\.json describes none of the 2 classes.*first: 'dog'"):
        check_coverage(d, ["dog", "red fox"])
    with pytest.warns(KnowledgeWarning, match=r"k\.json: 1 of the 2 classes .* first 'dog'"):
        cov = check_coverage(d, ["sea_lion", "dog"])
    assert cov.missing == ["dog"]
    with pytest.raises(KnowledgeError, match="first 'dog'"):
        check_coverage(d, ["sea_lion", "dog"], on_missing="error")


def test_resolve_relative_to_the_data_root_inline_and_bad_specs(tmp_path, monkeypatch):
    (tmp_path / "dtd").mkdir()
    _write(tmp_path / "dtd", "knowledge.json", json.dumps({"banded": "Striped bands."}))
    monkeypatch.delenv("VLPROMPT_DATA", raising=False)
    assert resolve_descriptions({"file": "dtd/knowledge.json", "data_root": str(tmp_path)}).lookup("banded")
    monkeypatch.setenv("VLPROMPT_DATA", str(tmp_path))
    assert resolve_descriptions("dtd/knowledge.json").lookup("banded") == ["Striped bands."]
    assert dataset_descriptions("dtd").lookup("banded") == ["Striped bands."]  # found in the dataset's folder
    assert find_knowledge_file(tmp_path / "dtd") == tmp_path / "dtd" / "knowledge.json"
    assert resolve_descriptions({"descriptions": {"a": "x", "b": ["y", "z"]}}).lookup("b") == ["y", "z"]
    with pytest.raises(KnowledgeError, match="under the data root"):
        resolve_descriptions("dtd/absent.json")
    with pytest.raises(KnowledgeError, match="exactly one of"):
        resolve_descriptions({"file": "a.json", "dataset": "dtd"})
    with pytest.raises(KnowledgeError, match="unknown key"):
        resolve_descriptions({"file": "dtd/knowledge.json", "fields": "x"})


def test_the_toy_worlds_knowledge_is_the_embedded_default():
    from vlprompt.toyworld import toy_classnames, toy_knowledge

    d = dataset_descriptions("toy-hues")
    names = toy_classnames("toy-hues")
    assert d.coverage(names).missing == []
    assert d.lookup("crimson circle") == [toy_knowledge("toy-hues")["crimson circle"]]


def test_key_words_rank_by_tf_idf_across_classes_and_keep_the_description_order():
    docs = {
        "crimson circle": ["A crimson circle is a round shape, red like a tomato."],
        "cobalt circle": ["A cobalt circle is a round shape, blue like the sky."],
        "crimson square": ["A crimson square is a square shape, red like a tomato with corners."],
    }
    kw = key_words(docs, 3)
    # "shape" is in every class (lowest idf); the class-name words and stop words are never key words
    assert kw["cobalt circle"] == ["round", "blue", "sky"]
    assert kw["crimson square"][-1] == "corners" and "square" not in kw["crimson square"]
    assert all("crimson" not in w and "like" not in w for w in kw["crimson circle"])
    assert key_words(docs, 1)["crimson square"] == ["corners"]  # the one word no other class has
    with pytest.raises(ValueError):
        key_words(docs, 0)


def test_leading_clause_and_sentences():
    text = "A domesticated mammal (Canis familiaris), kept as a pet. It barks. 3 legs"
    assert leading_clause(text) == "A domesticated mammal"
    assert leading_clause("A round shape.") == "A round shape"
    assert split_sentences(text) == ["A domesticated mammal (Canis familiaris), kept as a pet.", "It barks.", "3 legs"]


def test_verify_reports_description_coverage(tmp_path):
    from vlprompt.toyworld import ensure_toy_dataset, toy_classnames

    root = tmp_path / "data"
    ensure_toy_dataset("toy-hues", root, counts={"train": 1, "val": 1, "test": 1})
    names = toy_classnames("toy-hues")
    auto = verify_dataset("toy-hues", root)  # the knowledge.json written with the dataset is found
    assert auto.knowledge.covered == 40 and not auto.knowledge.missing
    partial = _write(tmp_path, "partial.json", json.dumps({n: "x." for n in names[:30]}))
    report = verify_dataset("toy-hues", root, knowledge=partial)
    assert report.knowledge.covered == 30 and report.knowledge.missing[0] == names[30]
    assert report.status == "found"  # descriptions are optional: coverage never changes the status
    text = format_reports([report])
    assert f"descriptions: 30/40 classes described by {partial} (first missing: {names[30]!r})" in text
    bad = _write(tmp_path, "bad.json", "{")
    assert "descriptions: unusable" in format_reports([verify_dataset("toy-hues", root, knowledge=bad)])
