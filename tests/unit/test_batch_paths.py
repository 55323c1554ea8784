"""Where batch scoring may write, decided before Spark starts."""

from __future__ import annotations

import pytest

from pipelines import batch_score


@pytest.mark.parametrize(
    ("source", "output"),
    [
        ("/data/reviews", "/data/reviews"),  # the same folder
        ("/data/reviews.csv", "/data"),  # above the input: overwrite would delete it
        ("/data/reviews", "/data/reviews/scored"),  # inside the input: read back as input
        ("s3a://bucket/in", "s3a://bucket/in/out/"),
    ],
)
def test_an_output_that_overlaps_the_input_is_refused(source, output):
    assert "overlaps the input" in batch_score._overlap(source, output)


@pytest.mark.parametrize(
    ("source", "output"),
    [("/data/reviews.csv", "/data/reviews"), ("/data/in", "/data/input-scored"), ("/a", "/b")],
)
def test_outputs_beside_the_input_are_fine(source, output):
    assert batch_score._overlap(source, output) is None


def test_main_refuses_an_overlap_before_spark_starts(tmp_path, capsys):
    source = tmp_path / "reviews.csv"
    source.write_text("text\nA fine film.\n")
    code = batch_score.main(
        ["--input", str(source), "--output", str(tmp_path), "--overwrite", "true"]
    )
    assert code == 2
    assert "overlaps the input" in capsys.readouterr().err
    assert source.exists()
