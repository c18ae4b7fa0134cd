"""The keyword syntax (one parser for the TUI and ``query --keyword``), against the real release."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from medpix_tui.bundle import Bundle
from medpix_tui.errors import QueryError
from medpix_tui.query import value_at
from medpix_tui.search import CASE_COLUMNS, IMAGE_COLUMNS, keyword_hint, not_yet_searchable, parse_keywords


def words_of(real_bundle: Bundle, image: dict) -> set[str]:
    """Every word of an image's indexed text and its case's, as the index's tokenizer splits them."""
    case = real_bundle.store.get_case(image["U_id"]) or {}
    texts = ([value_at(image, p) for p, _ in IMAGE_COLUMNS.values()]
             + [value_at(case, p) for p, _ in CASE_COLUMNS.values()])
    return {w for t in texts if isinstance(t, str) for w in re.findall(r"\w+", t.lower())}


def test_the_syntax_parses_as_documented() -> None:
    q = parse_keywords('"ring enhancing" lesion glioma OR astrocytoma -metastasis enhanc*')
    assert [[t.words for t in g] for g in q.groups] == [[("ring", "enhancing")], [("lesion",)],
                                                       [("glioma",), ("astrocytoma",)], [("enhanc",)]]
    assert q.groups[-1][0].prefix and not q.groups[1][0].prefix
    assert [t.words for t in q.excluded] == [("metastasis",)]


def test_and_and_not_in_capitals_are_operators_as_or_is() -> None:
    """'glioma AND astrocytoma' required the word "and"; 'glioma NOT metastasis' required "not" and metastasis."""
    assert parse_keywords("glioma AND astrocytoma") == parse_keywords("glioma astrocytoma")
    assert parse_keywords("glioma NOT metastasis") == parse_keywords("glioma -metastasis")
    assert parse_keywords('glioma NOT "ring enhancing"') == parse_keywords('glioma -"ring enhancing"')
    lower = parse_keywords("and not")  # lower case: words like any other
    assert [t.words for t in lower.terms] == [("and",), ("not",)] and not lower.excluded
    with pytest.raises(QueryError, match="only exclude"):
        parse_keywords("NOT glioma")


@pytest.mark.parametrize("text", ["([", '"', "-", "*", "OR", "AND", "NOT", "OR AND NOT"])
def test_no_word_is_one_clear_error(text: str) -> None:
    with pytest.raises(QueryError, match="at least one word"):
        parse_keywords(text)


@pytest.mark.parametrize("text", ["a", "a b", "-x y"])
def test_one_letter_words_are_said_to_be_too_short(text: str) -> None:
    """'query --keyword a' said "type letters or digits" to someone who had."""
    with pytest.raises(QueryError, match="a word of 2 letters or more"):
        parse_keywords(text)


@pytest.mark.parametrize("text", ['NEAR(a b)', 'col:glioma', '"un"closed" (x', "glioma AND", '^glioma', "x" * 300])
def test_fts5_syntax_typed_by_a_user_never_reaches_fts5(real_bundle: Bundle, text: str) -> None:
    real_bundle.store.keyword_search(text, limit=5)  # no sqlite error: every word is quoted


def test_words_are_anded_phrases_are_adjacent_and_minus_excludes(real_bundle: Bundle) -> None:
    store = real_bundle.store
    every = store.keyword_search("ring enhancing lesion", limit=0)
    any_word = store.search_index().conn.execute(
        "SELECT count(*) FROM images WHERE images MATCH 'ring OR enhancing OR lesion'").fetchone()[0]
    assert 0 < len(every) < any_word
    for _, image in every:
        assert {"ring", "enhancing", "lesion"} <= words_of(real_bundle, image)
    phrase = {d["image"] for _, d in store.keyword_search('"ring enhancing" lesion', limit=0)}
    assert phrase and phrase <= {d["image"] for _, d in every}
    either = {d["image"] for _, d in store.keyword_search("glioma OR astrocytoma", limit=0)}
    assert {d["image"] for _, d in store.keyword_search("glioma", limit=0)} < either
    without = store.keyword_search("glioma -astrocytoma", limit=0)
    assert without and all("astrocytoma" not in words_of(real_bundle, d) for _, d in without)


def test_prefix_only_with_a_star(real_bundle: Bundle) -> None:
    store = real_bundle.store
    assert store.keyword_search("enhanc", limit=0) == []
    starred = store.keyword_search("enhanc*", limit=0)
    assert starred and all(any(w.startswith("enhanc") for w in words_of(real_bundle, d)) for _, d in starred)


def test_query_keyword_json_returns_only_documents_with_every_word(real_bundle: Bundle) -> None:
    out = subprocess.run([sys.executable, "-m", "medpix_tui", "query", "--bundle", str(real_bundle.root),
                          "--keyword", "ring enhancing lesion", "--json"], capture_output=True, text=True, check=True)
    docs = json.loads(out.stdout)
    assert docs and len(docs) <= 50
    for doc in docs:
        assert {"ring", "enhancing", "lesion"} <= words_of(real_bundle, doc)
    expected = [d["image"] for _, d in real_bundle.store.keyword_search("ring enhancing lesion")]
    assert [d["image"] for d in docs] == expected  # ranked as the library ranks


def test_snippets_mark_the_hits(real_bundle: Bundle) -> None:
    index = real_bundle.store.search_index()
    hits = index.search("ring enhancing lesion", limit=5)
    snippets = index.snippets("ring enhancing lesion", [name for _, name in hits])
    assert set(snippets) == {name for _, name in hits}
    assert all("\x01" in s and "\x02" in s for s in snippets.values())


def test_ligatures_and_full_width_letters_match_as_plain_letters(real_bundle: Bundle) -> None:
    # pasted from a PDF: "ﬁ" is one character; full-width letters come from some input methods
    store = real_bundle.store
    plain = [d["image"] for _, d in store.keyword_search("fibrosis", limit=0)]
    assert plain
    assert [d["image"] for _, d in store.keyword_search("\ufb01brosis", limit=0)] == plain
    assert [d["image"] for _, d in store.keyword_search("ｆｉｂｒｏｓｉｓ", limit=0)] == plain


@pytest.mark.parametrize("pattern,message", [
    ("a{99999999}", "repeats 99,999,999 times; at most 1,000 a repeat"),  # grew the TUI to 16 GB
    ("(ab{400}){400}", "its repeats multiply to more than 100,000"),
])
def test_a_regex_of_huge_repeats_is_refused_before_it_compiles(pattern: str, message: str) -> None:
    import resource

    from medpix_tui.query import compile_regex, field_filter

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(QueryError, match=re.escape(message)):
        field_filter([("Description.Caption", pattern)])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing was built
    assert compile_regex("(a{300}){300}").search("a" * 90_000)  # counted repeats of a sane size stay
    assert compile_regex("x{2,}\\{99999\\}").search("xx{99999}")  # an escaped brace counts nothing


@pytest.mark.parametrize(("text", "hint"), [
    ("g", "keywords count from 2 letters"), ("x y", "keywords count from 2 letters"),
    ("-*", "-* alone is no keyword: type letters or digits"), ("OR", "OR alone is no keyword: type letters or digits"),
    ("AND", "AND alone is no keyword: type letters or digits"),
    ("-metastasis", "-metastasis only excludes: add a word to look for"),
    ("glioma 🧠 a", "not searched: 🧠 a"), ("glioma", ""), ("", "")])
def test_the_keyword_hint_says_what_searches_nothing(text: str, hint: str) -> None:
    assert keyword_hint(text) == hint
    assert (not_yet_searchable(text) is None) == (hint == "" or hint.startswith("not searched"))
