"""Entry point `batch_score`: score a corpus on Spark with the registered model.

Inference is MLflow's own Spark integration (`mlflow.pyfunc.spark_udf`), so the version the
gateway serves answers here too, on `local[*]` or any cluster. Which rows are skipped and why
is decided in Spark expressions, never in Python code of this project: the executors only
need the model, whose `code_paths` MLflow puts on their path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from urllib.parse import urlparse

import mlflow
from mlflow.environment_variables import MLFLOW_RUN_ID
from mlflow.exceptions import MlflowException
from mlflow.models import get_model_info
from mlflow.tracking import MlflowClient
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from model.names import ALIAS, MODEL_NAME, TRAINING_EXPERIMENT
from pipelines.errors import BatchError

EXPERIMENT = TRAINING_EXPERIMENT
DEFAULT_MODEL_URI = f"models:/{MODEL_NAME}@{ALIAS}"
# Rows per Arrow batch handed to the model (spark.sql.execution.arrow.maxRecordsPerBatch).
DEFAULT_BATCH_SIZE = 10_000
FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
LINEAGE_FILE = "_lineage.json"  # a leading underscore: Spark's readers skip it
PREDICTION = ("sentiment", "confidence", "known_terms")
ADDED = (*PREDICTION, "model_version", "skip_reason")

# The gateway's sentence for empty and whitespace-only texts (gateway/api/schemas.py EMPTY).
EMPTY = "Input text cannot be empty."
NULL = "Input text is null."
NOT_STRING = "Input text must be a string, not {}."
SKIP_METRICS = {NULL: "skipped_null", EMPTY: "skipped_empty"}
# Whitespace exactly as Python's str.strip() sees it (the gateway's test), for Java's regex.
_WHITESPACE = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x110000)) if c.isspace())
BLANK = f"^[{_WHITESPACE}]*$"


# pyspark 4.3 warns that pandas 3 is not fully supported; answers were checked identical.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")


@dataclass(frozen=True)
class Job:
    input: str
    output: str
    text_column: str = "text"
    model_uri: str = DEFAULT_MODEL_URI
    overwrite: bool = False
    partitions: int = 0  # 0: the input's partitions, at least one per core
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass
class Result:
    run_id: str
    model_version: str
    output: str
    rows_read: int
    rows_scored: int
    rows_skipped: int
    seconds: float
    labels: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Model:
    uri: str  # pinned to one version: the whole job uses it
    label: str  # as the gateway writes it: "v3"
    version: str | None
    run_id: str | None
    result_type: T.StructType


def session(master: str = "local[*]", batch_size: int = DEFAULT_BATCH_SIZE, **conf: str):
    """A Spark session whose Python workers run this interpreter, with stage progress shown."""
    # Local workers are started from the environment, not only from the session's conf.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName("batch_score")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .config("spark.ui.showConsoleProgress", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    )
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def score(spark: SparkSession, job: Job) -> Result:
    """Run ``job`` as an MLflow run of its own; nothing is written unless it all succeeds."""
    if not MLFLOW_RUN_ID.get() and mlflow.active_run() is None:
        mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="batch-score") as run:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(job.batch_size))
        output = _absolute(job.output)
        # `mlflow run` has logged the entry point's parameters as given: keep those.
        given = mlflow.get_run(run.info.run_id).data.params
        params = {
            "input": _absolute(job.input),
            "output": output,
            "text_column": job.text_column,
            "model_uri": job.model_uri,
            "overwrite": job.overwrite,
            "master": spark.sparkContext.master,
            "partitions": job.partitions,
            "batch_size": job.batch_size,
        }
        mlflow.log_params({key: value for key, value in params.items() if key not in given})
        fs = _Files(spark)
        overlap = _overlap(_absolute(job.input), output)
        if overlap:
            raise BatchError(overlap)
        if fs.exists(output) and not job.overwrite:
            raise BatchError(_exists(output))
        frame, digest = read_input(spark, fs, job.input)
        if job.text_column not in frame.columns:
            raise BatchError(
                f"Column '{job.text_column}' is not in {job.input}, whose columns are "
                f"{', '.join(frame.columns)}: set text_column to the column holding the text."
            )
        model = resolve(job.model_uri)
        mlflow.log_params({"model_version": model.version or "", "model_run_id": model.run_id})
        mlflow.set_tags({"model_version": model.label, "input_digest": digest})
        scored = with_predictions(spark, frame, job, model)
        started = time.perf_counter()
        counts = write(spark, fs, scored, output, job.overwrite, _lineage(run, job, model, digest))
        seconds = time.perf_counter() - started
        result = _result(run.info.run_id, model, output, counts, seconds)
        mlflow.log_metrics(
            {
                "rows_read": result.rows_read,
                "rows_scored": result.rows_scored,
                "rows_skipped": result.rows_skipped,
                "rows_per_second": result.rows_per_second,
                "seconds": seconds,
                **{f"label_{label}": n for label, n in result.labels.items()},
                **{name: n for name, n in result.skipped.items()},
            }
        )
        mlflow.set_tag("output", output)
    return result


def read_input(spark: SparkSession, fs: _Files, path: str) -> tuple[DataFrame, str]:
    """The input as a DataFrame and a digest of its files (paths, sizes, modification times)."""
    path = _absolute(path)
    if not fs.exists(path):
        raise BatchError(
            f"Input not found: {path}; give a CSV, Parquet or JSON-lines file or folder."
        )
    files = fs.files(path)
    formats = {FORMATS.get(os.path.splitext(name)[1].lower()) for name, _, _ in files}
    fmt = formats.pop() if len(formats) == 1 else None
    if fmt is None:
        raise BatchError(
            f"Cannot tell the format of {path}: give a .csv, .parquet, .json or .jsonl file, "
            "or a folder holding files of one of these formats only."
        )
    reader = spark.read.format(fmt)
    if fmt == "csv":
        # Reviews hold commas, quotes and line breaks: RFC 4180 quoting, text kept as written.
        reader = reader.options(header=True, multiLine=True, escape='"', mode="FAILFAST")
    elif fmt == "json":
        reader = reader.option("mode", "FAILFAST")
    try:
        frame = reader.load(path)
        frame.schema  # noqa: B018 - reading the schema reads the files' headers now
    except Exception as error:  # Spark's analysis errors and py4j's alike
        raise BatchError(f"Cannot read {path} as {fmt.upper()}: {_first_line(error)}.") from None
    listing = "\n".join(f"{name}\t{size}\t{mtime}" for name, size, mtime in sorted(files))
    return frame, hashlib.sha256(listing.encode()).hexdigest()


def resolve(model_uri: str) -> Model:
    """Pin ``model_uri`` to one version, and read the answer's shape from its signature."""
    version = run_id = None
    pinned = model_uri
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/([^/]+))/?", model_uri)
    client = MlflowClient()
    try:
        if match and match.group(2):
            found = client.get_model_version_by_alias(match.group(1), match.group(2))
        elif match and match.group(3) and match.group(3).isdigit():
            found = client.get_model_version(match.group(1), match.group(3))
        elif match:
            latest = client.search_model_versions(f"name='{match.group(1)}'")
            if not latest:
                raise MlflowException(f"no versions of {match.group(1)}")
            found = max(latest, key=lambda v: int(v.version))
        else:
            found = None
        if found is not None:
            version, run_id = str(found.version), found.run_id
            pinned = f"models:/{found.name}/{version}"
        info = get_model_info(pinned)
    except Exception as error:  # MlflowException, OSError, connection errors alike
        raise BatchError(
            f"Model URI {model_uri} does not resolve ({_first_line(error)}): give a registered "
            f"version, an alias that is set, or a model path, e.g. models:/{MODEL_NAME}/1."
        ) from None
    outputs = info.signature.outputs if info.signature else None
    if outputs is None or not {"sentiment", "confidence"} <= set(outputs.input_names()):
        raise BatchError(
            f"Model {pinned} declares no sentiment and confidence outputs in its signature: "
            "give a version logged by this project."
        )
    fields = [
        T.StructField(spec.name, spec.type.to_spark())
        for spec in outputs.inputs
        if spec.name in PREDICTION
    ]
    label = f"v{version}" if version else pinned
    return Model(pinned, label, version, run_id or info.run_id, T.StructType(fields))


def with_predictions(spark: SparkSession, frame: DataFrame, job: Job, model: Model) -> DataFrame:
    """The input's columns, then the model's answer, the version label and the skip reason."""
    clashes = [name for name in frame.columns if name in ADDED and name != job.text_column]
    for name in clashes:  # e.g. the Kaggle file's `sentiment` label column
        frame = frame.withColumnRenamed(name, f"input_{name}")
    if clashes:
        print(f"Input columns renamed: {', '.join(f'{c} -> input_{c}' for c in clashes)}")
    wanted = job.partitions or spark.sparkContext.defaultParallelism
    if job.partitions or frame.rdd.getNumPartitions() < wanted:
        frame = frame.repartition(wanted)
    text = F.col(f"`{job.text_column}`")
    reason = skip_reason(text, frame.schema[job.text_column].dataType)
    frame = frame.withColumn("skip_reason", reason)
    names = [spec.name for spec in model.result_type.fields]
    if isinstance(frame.schema[job.text_column].dataType, T.StringType):
        try:
            predict = mlflow.pyfunc.spark_udf(
                spark, model.uri, result_type=model.result_type, env_manager="local"
            )
        except Exception as error:  # e.g. the version's artifacts cannot be downloaded
            raise BatchError(f"Model {model.uri} cannot be loaded: {_first_line(error)}.") from None
        # Skipped rows reach the model as "" (cheap, and the model never sees a null).
        text_in = F.when(F.col("skip_reason").isNull(), text).otherwise(F.lit(""))
        frame = frame.withColumn("_prediction", predict(F.struct(text_in.alias("text"))))
        answer = {n: F.col("_prediction").getField(n) for n in names}
    else:
        answer = {n: F.lit(None).cast(model.result_type[n].dataType) for n in names}
    scored = F.col("skip_reason").isNull()
    columns = [F.col(f"`{n}`") for n in frame.columns if n not in ("_prediction", "skip_reason")]
    columns += [F.when(scored, answer[n]).alias(n) for n in names]
    columns += [
        F.when(scored, F.lit(model.label)).alias("model_version"),
        F.col("skip_reason"),
    ]
    return frame.select(*columns)


def skip_reason(text: Column, data_type: T.DataType) -> Column:
    """Why a row is not scored (null when it is): the gateway's rules, in Spark."""
    if not isinstance(data_type, T.StringType):
        return F.when(text.isNull(), F.lit(NULL)).otherwise(
            F.lit(NOT_STRING.format(data_type.simpleString()))
        )
    return F.when(text.isNull(), F.lit(NULL)).when(text.rlike(BLANK), F.lit(EMPTY))


def write(
    spark: SparkSession, fs: _Files, scored: DataFrame, output: str, overwrite: bool, lineage: dict
) -> list:
    """Write beside ``output``, count, add the lineage file, then move it into place: an
    output being replaced is moved aside first and deleted only once the new one is in place
    (put back if the move fails), so the old output or the new one always exists."""
    parent, name = output.rstrip("/").rsplit("/", 1)
    # Not hidden: Spark's readers skip names starting with "." or "_", and it is read back.
    token = uuid.uuid4().hex[:8]
    staging, aside = f"{parent}/{name}.incomplete-{token}", f"{parent}/{name}.replaced-{token}"
    try:
        scored.write.parquet(staging)
        counts = spark.read.parquet(staging).groupBy("sentiment", "skip_reason").count().collect()
        fs.write_text(f"{staging}/{LINEAGE_FILE}", json.dumps(lineage, indent=2) + "\n")
        # Checked again: an output may have appeared while the job ran, and a move onto an
        # existing folder would put the result inside it.
        replacing = fs.exists(output)
        if replacing and not overwrite:
            raise BatchError(_exists(output))
        if replacing and not fs.rename(output, aside):
            raise BatchError(f"Could not move the previous output at {output} aside.")
        if not fs.rename(staging, output) or not fs.exists(f"{output}/{LINEAGE_FILE}"):
            if replacing and not fs.exists(output):
                fs.rename(aside, output)  # the previous output, back in place
            raise BatchError(f"Could not move the finished output into place at {output}.")
        if replacing:
            fs.delete(aside)
    except BatchError:
        fs.delete(staging)
        raise
    except Exception as error:
        fs.delete(staging)
        raise BatchError(
            f"The job failed while scoring ({_first_line(error)}); nothing was written to {output}."
        ) from None
    return counts


def _lineage(run, job: Job, model: Model, digest: str) -> dict:
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "tracking_uri": _without_credentials(mlflow.get_tracking_uri()),
        "model_uri": model.uri,
        "model_version": model.label,
        "model_run_id": model.run_id,
        "input": _absolute(job.input),
        "input_digest": digest,
        "text_column": job.text_column,
    }


def _result(run_id: str, model: Model, output: str, counts: list, seconds: float) -> Result:
    labels: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for row in counts:
        if row["skip_reason"] is None:
            labels[row["sentiment"]] = labels.get(row["sentiment"], 0) + row["count"]
        else:
            key = SKIP_METRICS.get(row["skip_reason"], "skipped_not_string")
            skipped[key] = skipped.get(key, 0) + row["count"]
    scored, skip = sum(labels.values()), sum(skipped.values())
    return Result(
        run_id, model.label, output, scored + skip, scored, skip, seconds, labels, skipped
    )


class _Files:
    """Hadoop's file system API through the JVM: the same paths Spark reads and writes."""

    def __init__(self, spark: SparkSession):
        if spark._jvm is None:
            raise BatchError("Batch scoring needs a classic Spark session, not Spark Connect.")
        self._jvm = spark._jvm
        self._conf = spark._jsc.hadoopConfiguration()

    def _fs(self, path: str):
        jpath = self._jvm.org.apache.hadoop.fs.Path(path)
        return jpath, jpath.getFileSystem(self._conf)

    def exists(self, path: str) -> bool:
        jpath, fs = self._fs(path)
        return bool(fs.exists(jpath))

    def files(self, path: str) -> list[tuple[str, int, int]]:
        """Data files under ``path`` (hidden ``_`` and ``.`` files left out, as Spark does)."""
        jpath, fs = self._fs(path)
        found = []
        listing = fs.listFiles(jpath, True)
        while listing.hasNext():
            status = listing.next()
            name = status.getPath().getName()
            if not name.startswith(("_", ".")):
                found.append((str(status.getPath()), status.getLen(), status.getModificationTime()))
        return found

    def write_text(self, path: str, text: str) -> None:
        jpath, fs = self._fs(path)
        stream = fs.create(jpath, False)
        try:
            stream.write(bytearray(text.encode()))
        finally:
            stream.close()

    def delete(self, path: str) -> None:
        jpath, fs = self._fs(path)
        fs.delete(jpath, True)

    def rename(self, source: str, target: str) -> bool:
        jsource, fs = self._fs(source)
        return bool(fs.rename(jsource, self._jvm.org.apache.hadoop.fs.Path(target)))


def _absolute(path: str) -> str:
    """Local paths are taken from the current directory; URIs (s3a://, hdfs://) as given."""
    if urlparse(path).scheme and len(urlparse(path).scheme) > 1:
        return path
    return os.path.abspath(os.path.expanduser(path))


def _without_credentials(uri: str) -> str:
    """The lineage file travels with the data: no user name or password from the URI."""
    parts = urlparse(uri)
    if parts.username is None and parts.password is None:
        return uri
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def _overlap(source: str, output: str) -> str | None:
    """Why ``output`` may not be written given ``source`` (both absolute), or None: the same
    path, or one inside the other, would read what is being replaced, or delete the input."""
    a, b = source.rstrip("/"), output.rstrip("/")
    if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
        return (
            f"The output {output} overlaps the input {source} (the same path, or one inside "
            "the other): choose an output outside the input."
        )
    return None


def _exists(output: str) -> str:
    return f"Output {output} already exists: pass overwrite=true to replace it, or choose another."


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__).rstrip(".")


def _flag(value: str) -> bool:
    if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return value.lower() in {"true", "1", "yes"}


def _whole(value: str) -> int:
    number = float(value)  # MLproject passes numbers as floats
    if number != int(number) or number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return int(number)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description="Score a corpus on Spark with a registered model.")
    cli.add_argument("--input", required=True, help="CSV, Parquet or JSON-lines file or folder")
    cli.add_argument("--output", required=True, help="Parquet folder to create")
    cli.add_argument("--text-column", default="text")
    cli.add_argument("--model-uri", default=DEFAULT_MODEL_URI)
    cli.add_argument("--overwrite", type=_flag, default=False)
    cli.add_argument("--master", default="local[*]")
    cli.add_argument("--partitions", type=_whole, default=0, help="0: at least one per core")
    cli.add_argument("--batch-size", type=_whole, default=DEFAULT_BATCH_SIZE)
    args = cli.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # Spark's is shown
    if args.batch_size < 1:
        cli.error("--batch-size must be at least 1")
    job = Job(
        args.input,
        args.output,
        args.text_column,
        args.model_uri,
        args.overwrite,
        args.partitions,
        args.batch_size,
    )
    output = _absolute(args.output)
    overlap = _overlap(_absolute(args.input), output)
    if overlap:
        print(f"Batch scoring error: {overlap} Nothing was written.", file=sys.stderr)
        return 2
    if not args.overwrite and "://" not in output and os.path.exists(output):
        # Said before Spark starts; score() checks again, for any file system.
        print(f"Batch scoring error: {_exists(output)} Nothing was written.", file=sys.stderr)
        return 2
    spark = session(args.master, args.batch_size)
    try:
        result = score(spark, job)
    except BatchError as error:
        print(f"Batch scoring error: {error} Nothing was written.", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(
        f"Scored {result.rows_scored} rows, skipped {result.rows_skipped}, with "
        f"{MODEL_NAME} {result.model_version} in {result.seconds:.1f}s "
        f"({result.rows_per_second:,.0f} rows/s); output {result.output}, run {result.run_id}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
