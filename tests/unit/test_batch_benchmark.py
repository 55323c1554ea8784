"""The batch benchmark's corpus layout and its reading of the JVM's GC log."""

import pandas as pd

from benchmarks import batch

# As -Xlog:gc writes it (OpenJDK 17, G1) during a local[*] job; the remark's and the full
# collection's figures are changed to tell them apart.
GC_LOG = """\
[0.005s][info][gc] Using G1
[0.521s][info][gc] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 31M->25M(380M) 15.046ms
[2.221s][info][gc] GC(6) Concurrent Mark Cycle
[2.234s][info][gc] GC(6) Pause Remark 131M->131M(114M) 2.670ms
[2.240s][info][gc] GC(6) Pause Cleanup 31M->31M(114M) 0.051ms
[2.242s][info][gc] GC(6) Concurrent Mark Cycle 20.676ms
[4.912s][info][gc] GC(9) Pause Young (Normal) (G1 Evacuation Pause) 85M->38M(114M) 19.982ms
[6.990s][info][gc] GC(13) Pause Young (Concurrent Start) (G1 Evacuation Pause) 89M->36M(114M) 11ms
[9.100s][info][gc] GC(20) Pause Full (System.gc()) 1G->40960K(1G) 90.000ms
"""


def test_no_corpus_file_holds_more_rows_than_the_bound(tmp_path):
    # The one-process baseline reads a whole file at a time: with a fixed number of files,
    # its memory grew with the corpus.
    corpus = batch.build_corpus(tmp_path / "corpus", 1_001, rows_per_file=250)

    files = sorted(corpus.glob("*.parquet"))
    sizes = [len(pd.read_parquet(path)) for path in files]
    assert max(sizes) <= 250
    assert len(files) == 5
    ids = pd.concat(pd.read_parquet(path) for path in files)["id"]
    assert sorted(ids) == list(range(1_001))


def test_heap_after_gc_counts_collections_only():
    heap = batch.heap_after_gc(GC_LOG)

    # A remark frees nothing yet: its 131M is not what a collection left.
    assert heap == {
        "heap_after_gc_mb": 40.0,
        "heap_committed_mb": 1024.0,
        "gcs": 4,
        "heap_live_after_job_mb": 40.0,  # the full collection the benchmark asks for at the end
    }


def _target(small_s: float, big_s: float, jvm: tuple[float, float], workers: tuple[float, float]):
    def run(wall: float, jvm_cpu: float, workers_cpu: float) -> dict:
        parts = {f"{part}_cpu_s": 0.0 for part in batch.PARTS}
        parts |= {"jvm_cpu_s": jvm_cpu, "workers_cpu_s": workers_cpu}
        return {"wall_s": wall, "peak_mb": 100.0, **parts}

    return {"small": run(small_s, jvm[0], workers[0]), "big": run(big_s, jvm[1], workers[1])}


def test_rates_and_cpu_are_taken_beyond_the_fixed_cost_and_set_against_predict_alone():
    rows = batch.SMALL + 100_000
    report = {
        "rows": rows,
        "alone": {"rows": 50_000, "predict_s": 10.0},  # 5,000 rows/s
        "targets": {
            "pyfunc": _target(5, 25, (0, 0), (0, 0)),
            # 100,000 rows in 20 s past the small job: 5,000 rows/s, 1.0x.
            "local[1]": _target(20, 40, (3, 7), (1, 16)),
            # 100,000 rows in 12.5 s: 8,000 rows/s, 1.6x; CPU 40 + 150 us per row.
            "local[*]": _target(20, 32.5, (3, 7), (1, 16)),
        },
        "per_row": {"clean_us": 1.0},
    }

    summary = batch.summarise(report)

    assert summary["alone_rows_per_s"] == 5_000
    assert summary["vs_alone"] == 8_000 / 5_000
    assert summary["one_core_vs_alone"] == 1.0
    cpu = summary["targets"]["local[*]"]["cpu_us_per_row"]
    assert (round(cpu["jvm"]), round(cpu["workers"]), cpu["driver"]) == (40, 150, 0)
