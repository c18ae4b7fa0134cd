"""Data-layer figures: build (with and without the model), verify and Parquet export times, and a fixed query list
on the full data and on a x30 synthetic copy, each beside DuckDB over Parquet running the same query.

    python bench/bench_data.py [--source ../shared/medpix-2.0] [--scale 30] [--repeat 5] [--model DIR]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from medpix_tui.bundle import build_bundle, default_source_path, open_bundle, verify_bundle
from medpix_tui.export import write_parquet
from medpix_tui.query import field_filter
from medpix_tui.source import SourceData, load_source
from medpix_tui.sql import connect
from medpix_tui.store import CASES, IMAGES, Store

# (name, store call, DuckDB SQL doing the same)
QUERIES = [
    ("field regex: caption ~ glioma", lambda s: s.find(IMAGES, field_filter([("Description.Caption", "glioma")])),
     "SELECT * FROM images WHERE regexp_matches(caption, 'glioma', 'i')"),
    ("field regex x3 (authors' GUI)",
     lambda s: s.find(IMAGES, field_filter([("Description.Caption", "fracture"), ("Type", "ct"),
                                            ("Description.Sex", "^male")])),
     "SELECT * FROM images WHERE regexp_matches(caption,'fracture','i') AND regexp_matches(modality,'ct','i')"
     " AND regexp_matches(sex,'^male','i')"),
    ("case regex: title ~ fracture", lambda s: s.find(CASES, field_filter([("Case.Title", "fracture")])),
     "SELECT * FROM cases WHERE regexp_matches(title, 'fracture', 'i')"),
    ("facet: MR & Head", lambda s: s.find(IMAGES, {"Type": "MR", "Location Category": "Head"}),
     "SELECT * FROM images WHERE modality='MR' AND location_category='Head'"),
    ("facet: $or modality/location",
     lambda s: s.find(IMAGES, {"$or": [{"Type": "MR"}, {"Location Category": "Thorax"}]}),
     "SELECT * FROM images WHERE modality='MR' OR location_category='Thorax'"),
    ("facet: plane not axial",
     lambda s: s.find(IMAGES, {"Description.Plane": {"$not": {"$regex": "axial", "$options": "i"}}}),
     "SELECT * FROM images WHERE NOT regexp_matches(coalesce(plane,''), 'axial', 'i')"),
    ("facet counts (5 fields)",
     lambda s: s.facet_counts(IMAGES, {"Type": "CT"}, ["Location Category", "Description.Plane", "Description.Sex",
                                                       "Location", "Description.ACR Codes"]),
     "SELECT location_category, plane, sex, location, acr_codes, count(*) FROM images WHERE modality='CT'"
     " GROUP BY GROUPING SETS ((location_category),(plane),(sex),(location),(acr_codes))"),
    ("keyword: ring enhancing lesion", lambda s: s.keyword_search("ring enhancing lesion", limit=50),
     "SELECT i.image FROM image_reports i WHERE regexp_matches(i.caption || ' ' || coalesce(i.title,'') || ' '"
     " || coalesce(i.diagnosis,''), 'ring|enhanc|lesion', 'i') LIMIT 50"),
    ("keyword: fracture (MR only)", lambda s: s.keyword_search("fracture", flt={"Type": "MR"}, limit=50),
     "SELECT image FROM image_reports WHERE modality='MR'"
     " AND regexp_matches(caption || ' ' || coalesce(title,''), 'fracture', 'i') LIMIT 50"),
    ("by id: image", lambda s: s.get_image("MPX1009_synpic46283"),
     "SELECT * FROM images WHERE image='MPX1009_synpic46283'"),
    ("by id: case", lambda s: s.get_case("MPX1009"), "SELECT * FROM cases WHERE u_id='MPX1009'"),
    ("image with case", lambda s: s.get_report("MPX1009_synpic46283"),
     "SELECT * FROM image_reports WHERE image='MPX1009_synpic46283'"),
    ("case's images", lambda s: s.images_of_case("MPX1009"), "SELECT * FROM images WHERE u_id='MPX1009'"),
    ("sorted page: oldest MR", lambda s: s.find(IMAGES, {"Type": "MR"}, sort=[("Description.Age", -1)], limit=20),
     "SELECT * FROM images WHERE modality='MR' ORDER BY CAST(Description.Age AS VARCHAR) DESC LIMIT 20"),
]


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up: snapshot load and index build are one-time costs
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def synthetic(source: SourceData, scale: int) -> SourceData:
    """``scale`` copies of every case and image, with fresh ids (copy 0 keeps the real ids).

    Each copy's captions and case titles are made distinct, as a larger real dataset's would
    be: plain copies would flatter the store, which matches each distinct value once.
    """
    cases, images, splits = [], [], {}
    for k in range(scale):
        sfx = "" if k == 0 else f"x{k}"
        for c in source.cases:
            c2 = copy.deepcopy(c)
            c2["U_id"] += sfx
            c2["TAC"] = [n + sfx for n in c["TAC"]]
            c2["MRI"] = [n + sfx for n in c["MRI"]]
            if sfx and c2.get("Case", {}).get("Title"):
                c2["Case"]["Title"] += f" ({sfx})"
            cases.append(c2)
            splits[c2["U_id"]] = source.splits.get(c["U_id"])
        for d in source.images:
            d2 = copy.deepcopy(d)
            d2["U_id"] += sfx
            d2["image"] += sfx
            if sfx and d2["Description"].get("Caption"):
                d2["Description"]["Caption"] += f" ({sfx})"
            images.append(d2)
    return SourceData(root=source.root, cases=cases, images=images, splits=splits, image_dir=source.image_dir)


def run_queries(label: str, store: Store, parquet: Path, repeat: int) -> None:
    con = connect(parquet)
    print(f"\n{label}")
    print(f"{'query':34} {'store ms':>9} {'duckdb ms':>10} {'ratio':>7}")
    worst = 0.0
    for name, call, sql in QUERIES:
        ms = median_ms(lambda call=call: call(store), repeat)
        # the engine alone, as before the sandbox
        dms = median_ms(lambda sql=sql: con.raw.execute(sql).fetchall(), repeat)
        worst = max(worst, ms)
        print(f"{name:34} {ms:9.1f} {dms:10.1f} {ms / dms:7.1f}")
    print(f"{'worst median':34} {worst:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=default_source_path())
    parser.add_argument("--scale", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", type=Path, help="build with this checkpoint folder instead of bundle/model")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medpix-bench-"))
    try:
        t = time.perf_counter()
        build_bundle(args.source, work / "bundle-with-model", model_dir=args.model)  # what `bundle build` makes
        model_build_s = time.perf_counter() - t
        t = time.perf_counter()
        build_bundle(args.source, work / "bundle", with_model=False)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        ok = verify_bundle(work / "bundle").ok
        verify_s = time.perf_counter() - t
        bundle = open_bundle(work / "bundle")
        t = time.perf_counter()
        write_parquet(bundle.store, work / "parquet-export")
        export_s = time.perf_counter() - t
        print(f"bundle build   {model_build_s:6.2f} s  (target <= 30; {build_s:.2f} s with --no-model)")
        print(f"bundle verify  {verify_s:6.2f} s  (target <= 10, ok={ok})")
        print(f"parquet export {export_s:6.2f} s  (target <= 5)")
        run_queries("full data (2050 images, 671 cases); target median <= 50 ms", bundle.store, bundle.parquet_dir,
                    args.repeat)
        bundle.close()

        big = synthetic(load_source(args.source, check_images=False), args.scale)
        t = time.perf_counter()
        store = Store.open_mongita(work / "big-store", writable=True)
        store.load(big)
        store.close()
        store = Store.open_mongita(work / "big-store")
        write_parquet(store, work / "big-parquet")
        print(f"\nx{args.scale} synthetic copy: {len(big.images)} images, {len(big.cases)} cases"
              f" (store + Parquet written in {time.perf_counter() - t:.1f} s)")
        run_queries(f"x{args.scale} synthetic; target median <= 1000 ms", store, work / "big-parquet",
                    max(2, args.repeat // 2))
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
