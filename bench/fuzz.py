"""Fuzz the ingest and the query layer for many examples; print examples tried and crashes found.

A crash is any exception other than the documented one (``QueryError`` for queries, a
one-line ``MedpixError`` with exit status 2 for sources), a broken ingest promise, an answer
that differs from the plain-Python reference, or a query that outlives the regex time limit.
The strategies are the ones of ``tests/test_hardening_properties.py``; CI runs them for a
few hundred examples, this script for as many as you ask::

    python bench/fuzz.py --examples 20000            # per target
    python bench/fuzz.py --examples 2000 --targets filters,ingest --seed 7
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medpix_tui.bundle import default_source_path  # noqa: E402
from medpix_tui.errors import QueryError  # noqa: E402
from medpix_tui.query import (  # noqa: E402
    REGEX_TIME_LIMIT,
    check_window,
    field_filter,
    parse_field_args,
    parse_filter,
    parse_projection,
    parse_sort,
    validate_filter,
)
from medpix_tui.scan import Snapshot  # noqa: E402
from medpix_tui.store import CASES, ID_FIELD, IMAGES, REPORTS  # noqa: E402
from tests.test_hardening_properties import (  # noqa: E402
    SQL_SECRET,
    any_filters,
    check_loaded_source,
    check_sql_statement,
    draw_source,
    evaluable_filters,
    random_paths,
    reference_ids,
    regexes,
    release_docs,
    sql_paths,
    sql_statements,
    vocabulary,
)

COLLECTIONS = (IMAGES, CASES, REPORTS)
#: a query may take the regex time limit plus this much for the rest of its work
SLACK = 3.0


class Findings:
    """Examples tried and distinct crashes (by type and where they were raised) of one target."""

    def __init__(self) -> None:
        self.tried = 0
        self.crashes: Counter[str] = Counter()
        self.samples: dict[str, str] = {}

    def record(self, kind: str, detail: str) -> None:
        self.crashes[kind] += 1
        self.samples.setdefault(kind, detail[:1500])


def _where(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "medpix_tui" in f.filename] or \
        traceback.extract_tb(exc.__traceback__)[-1:]
    f = frames[-1] if frames else None
    return f"{type(exc).__name__} at {Path(f.filename).name}:{f.lineno}" if f else type(exc).__name__


def guarded(findings: Findings, label: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one call; QueryError is an answer, anything else is a crash."""
    try:
        return fn(*args, **kwargs)
    except QueryError as exc:
        if not str(exc) or "\n" in str(exc):
            findings.record(f"{label}: QueryError not one line", repr(str(exc)))
        return None
    except Exception as exc:  # noqa: BLE001 - counting is the point
        findings.record(f"{label}: {_where(exc)}", f"{args!r:.600}\n{traceback.format_exc()}")
        return None


def run_target(name: str, body: Any, strategy: st.SearchStrategy, examples: int, rng_seed: int) -> Findings:
    findings = Findings()

    @seed(rng_seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(value: Any) -> None:
        findings.tried += 1
        try:
            body(findings, value)
        except Exception as exc:  # noqa: BLE001 - a crash of the check itself
            findings.record(f"{name}: {_where(exc)}", traceback.format_exc())

    fuzz()
    return findings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2000, help="examples per target (default 2000)")
    ap.add_argument("--targets", default="filters,reference,fields,regex,keywords,ingest,sql")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source", type=Path, default=default_source_path(), help="the MedPix 2.0 release")
    args = ap.parse_args()

    source = str(args.source)
    docs = release_docs(source)
    vocab = vocabulary(source)
    snaps = {c: Snapshot([json.loads(json.dumps(d)) for d in docs[c]]) for c in COLLECTIONS}
    for c in COLLECTIONS:  # the store serves documents in id order
        snaps[c].docs.sort(key=lambda d: str(d.get(ID_FIELD[c], "")))
    tmp = Path(tempfile.mkdtemp(prefix="medpix-fuzz-"))
    counter = iter(range(10 ** 9))

    def timed_select(f: Findings, collection: str, flt: Any, sort: list) -> list[int] | None:
        started = time.monotonic()
        idx = guarded(f, "select", snaps[collection].select, flt)
        if idx is not None and sort:
            idx = guarded(f, "sort", snaps[collection].sort, idx, sort)
        if time.monotonic() - started > REGEX_TIME_LIMIT + SLACK:
            f.record("select: outlived the time limit", json.dumps(flt)[:600])
        return idx

    def filters(f: Findings, drawn: tuple) -> None:
        collection, flt, text, sort = drawn
        guarded(f, "parse_filter", parse_filter, text)
        if guarded(f, "validate_filter", validate_filter, flt) is not None:
            timed_select(f, collection, flt, sort)

    def reference(f: Findings, drawn: tuple) -> None:
        collection, flt = drawn
        idx = timed_select(f, collection, flt, [])
        if idx is not None and [snaps[collection].docs[i][ID_FIELD[collection]] for i in idx] != \
                reference_ids(docs[collection], collection, flt):
            f.record("reference: different answer", json.dumps(flt)[:600])

    def fields(f: Findings, drawn: tuple) -> None:
        pairs, raw, sort, skip, limit = drawn
        flt = guarded(f, "field_filter", field_filter, pairs)
        if flt is not None:
            timed_select(f, IMAGES, flt, [])
        guarded(f, "parse_field_args", parse_field_args, raw)
        guarded(f, "parse_sort", parse_sort, sort)
        guarded(f, "parse_projection", parse_projection, sort)
        guarded(f, "check_window", check_window, skip, limit)

    def regex(f: Findings, drawn: tuple) -> None:
        path, pattern, options = drawn
        flt = guarded(f, "validate_filter", validate_filter, {path: {"$regex": pattern, "$options": options}})
        if flt is not None:
            timed_select(f, REPORTS, flt, [])

    index_holder: dict[str, Any] = {}

    def keywords(f: Findings, text: str) -> None:
        if "index" not in index_holder:
            from medpix_tui.search import SearchIndex

            index_holder["index"] = SearchIndex.build(docs[IMAGES], docs[CASES])
        guarded(f, "keyword_search", index_holder["index"].search, text, limit=10)

    def ingest(f: Findings, data: Any) -> None:
        check_loaded_source(draw_source(data, tmp / str(next(counter))))

    sql_holder: dict[str, Any] = {}

    def sql(f: Findings, statement: str) -> None:
        """SQL over a tiny bundle from a folder holding .tmp/secret.txt: refused or answered, nothing touched."""
        if "con" not in sql_holder:
            import os

            from medpix_tui.bundle import build_bundle
            from medpix_tui.sql import connect
            from tests.support import tree_digest, write_source

            bundle = build_bundle(write_source(tmp / "sql-src"), tmp / "sql-bundle", with_model=False)
            (tmp / "sql-work" / ".tmp").mkdir(parents=True)
            (tmp / "sql-work" / ".tmp" / "secret.txt").write_text(SQL_SECRET)
            os.chdir(tmp / "sql-work")
            sql_holder.update(con=connect(bundle / "parquet"), paths=sql_paths(bundle, tmp / "sql-work"),
                              watched={bundle: tree_digest(bundle), tmp / "sql-work": tree_digest(tmp / "sql-work")})
        try:
            check_sql_statement(sql_holder["con"], statement, sql_holder["watched"])
        except AssertionError as exc:
            f.record(f"sql: {str(exc)[:80]}", statement)

    collection = st.sampled_from(COLLECTIONS)
    sort_keys = st.lists(st.tuples(st.one_of(st.sampled_from(vocab["paths"][IMAGES]), random_paths()),
                                   st.sampled_from([1, -1])),
                         max_size=2)
    targets = {
        "filters": (filters, collection.flatmap(lambda c: st.tuples(
            st.just(c), any_filters(vocab, c), st.one_of(st.text(max_size=40), st.just("{")), sort_keys))),
        "reference": (reference, collection.flatmap(lambda c: st.tuples(st.just(c), evaluable_filters(vocab, c)))),
        "fields": (fields, st.tuples(
            st.lists(st.tuples(st.one_of(st.text(max_size=12), random_paths(), st.sampled_from(vocab["paths"][IMAGES])),
                               st.one_of(st.text(max_size=12), regexes(vocab["words"]))), max_size=3),
            st.lists(st.text(max_size=20), max_size=3), st.text(max_size=20), st.integers(-5, 10 ** 7),
            st.integers(-5, 10 ** 7))),
        "regex": (regex, st.tuples(st.sampled_from(["Description.Caption", "Case.Findings", "Case.History",
                                                    "Topic.Disease Discussion"]),
                                   regexes(vocab["words"]), st.text(alphabet="imsxz", max_size=2))),
        "keywords": (keywords, st.text(max_size=40)),
        "ingest": (ingest, st.data()),
        "sql": (sql, st.deferred(lambda: sql_statements(sql_holder.get("paths")
                                                        or sql_paths(tmp / "sql-bundle", tmp / "sql-work")))),
    }
    chosen = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(chosen) - set(targets)
    if unknown:
        ap.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    total_tried = total_crashes = 0
    print(f"{'target':<10} {'examples':>9} {'crashes':>8} {'seconds':>8}")
    report = {}
    for name in chosen:
        body, strategy = targets[name]
        started = time.perf_counter()
        findings = run_target(name, body, strategy, args.examples, args.seed)
        seconds = time.perf_counter() - started
        crashes = sum(findings.crashes.values())
        total_tried += findings.tried
        total_crashes += crashes
        report[name] = findings
        print(f"{name:<10} {findings.tried:>9} {crashes:>8} {seconds:>8.1f}", flush=True)
    print(f"{'total':<10} {total_tried:>9} {total_crashes:>8}")
    for name, findings in report.items():
        for kind, n in findings.crashes.most_common():
            print(f"\n[{name}] {kind} (x{n})\n{findings.samples[kind]}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
