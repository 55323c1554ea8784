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
