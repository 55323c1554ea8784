"""The prediction log's comparison in `make bench-serving`: its table and the 10 % bound."""

from benchmarks import log_backends


def row(rps: float, off: float) -> dict:
    return {
        "rps": rps,
        "p50_ms": 10.0,
        "p99_ms": 30.0,
        "errors": 0,
        "server_cpu_ms_per_request": {"gateway": 0.4, "database": 0.1},
        "share_of_off": rps / off,
    }


def test_postgresql_within_ten_percent_of_off_meets_the_bound():
    lines = log_backends.table({"files": row(1500, 1600), "postgresql": row(1450, 1600),
                                "off": row(1600, 1600)})  # fmt: skip
    assert "| log in PostgreSQL | 1,450 | 10.00 | 30.00 | 0 | 0.400 | 0.100 | 90.6% |" in lines
    assert lines[-1].endswith("costs 9.4% of the throughput with the log off (bound: at most "
                              "10%): **met**.")  # fmt: skip


def test_more_than_ten_percent_does_not():
    lines = log_backends.table({"postgresql": row(1400, 1600), "off": row(1600, 1600)})
    assert lines[-1].endswith("**not met**.")
    assert "12.5%" in lines[-1]


def test_without_postgresql_no_verdict_is_given():
    lines = log_backends.table({"files": row(1500, 1600), "off": row(1600, 1600)})
    assert not any("bound" in line for line in lines)
