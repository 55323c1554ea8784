"""Whether a new version becomes ``production``, and moving the alias; also the `promote`
entry point.

Aliases replace the stages deprecated in MLflow 3: the gateway follows
``models:/SentimentClassifier@production`` wherever it points.

The rule a training run follows (``promote=if_better``, the default):

- Without a production version, the new version is promoted.
- Two versions are compared only if they were evaluated on the same rows: the same data
  digest (every row, in order, after the ``max_rows`` sample), split seed, ``max_rows`` and
  split scheme. Every version records these as tags (``data_digest``, ``split_seed``,
  ``max_rows``, ``split``). Then they share their validation rows, and neither trained on
  them. Rows added to the training split alone (the monitor job's feedback reviews, never a
  validation or test review) leave that unchanged.
- Comparable: the production version is scored on this run's validation split, and the new
  version is promoted if its validation F1 is at least as high (ties go to the newer one). A
  production version that cannot be scored loses. The test split plays no part: its metrics
  stay an unbiased estimate.
- A production version refitted on train+val (tag ``fit_on=train+val``) has trained on those
  validation rows, so re-scoring it there would flatter it. Its recorded validation F1 (the
  run's ``val_f1``: its recipe fitted on train and scored on exactly these rows) is used
  instead; the new version's figure is the same kind, so both sides are "recipe fitted on
  train, scored on the same validation rows". Versions without the tag are re-scored.
- Not comparable (trained on other data, another seed or sample, or an older version that does
  not record them): the new version is not promoted, and the run says why. Promote it with
  ``promote=always`` or the `promote` entry point if that is what you want.

- Short texts: a challenger that wins on validation is still refused if its accuracy on the
  short-text slice (``pipelines.slices.SHORT``: the Rotten Tomatoes sentences' choose half,
  never trained on) is lower than production's by more than ``short_margin`` (default 1
  point). Both are scored on the same sentences, each with its published model.

``promote=never`` registers without promoting, ``promote=always`` promotes regardless. The
decision is logged on the run as the tags ``promotion.decision`` (``promoted`` or ``kept``),
``promotion.reason`` and ``promotion.champion`` (the production version it faced, or
``none``), and, when the champion was scored, the metrics ``champion_val_f1`` and
``champion_short_accuracy``; the version gets the decision and the reason as tags too.

The registry has no compare-and-set: a run holds a lock while it reads the champion, decides
and moves the alias (``pipelines.promotion_lock``), so promotions from any machine take turns,
and each decides against the production version the previous one left.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import asdict, dataclass, fields, replace

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from model.names import ALIAS, LABELS, MODEL_NAME
from model.signature import INPUT_EXAMPLE
from pipelines import evaluate, promotion_gate, promotion_lock
from pipelines.data import SPLIT
from pipelines.errors import PromotionError
from pipelines.model_card import location

MODES = ("never", "if_better", "always")
ELSEWHERE = "use promote=always or the promote entry point"
ATTEMPTS = 3


@dataclass(frozen=True)
class TrainedOn:
    """What a version was trained and validated on; equal values mean the same validation rows."""

    data_digest: str
    split_seed: int
    max_rows: int
    split: str = SPLIT

    def tags(self) -> dict[str, str]:
        return {field: str(value) for field, value in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> TrainedOn | None:
        """None when the tags do not say (versions registered before they were recorded)."""
        try:
            return cls(
                data_digest=tags["data_digest"],
                split_seed=int(tags["split_seed"]),
                max_rows=int(tags["max_rows"]),
                split=tags["split"],
            )
        except (KeyError, ValueError):
            return None

    def differences(self, mine: TrainedOn) -> list[str]:
        """What differs, as "<field> <this one's>, this run <mine>"."""
        label = {"data_digest": "data", "split_seed": "seed"}
        return [
            f"{label.get(f.name, f.name)} {getattr(self, f.name)}, this run {getattr(mine, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(mine, f.name)
        ]


@dataclass(frozen=True)
class Champion:
    """The production version a new one faces; scored only if comparable."""

    version: str
    trained_on: TrainedOn | None
    val_f1: float | None = None  # on the new run's validation rows
    error: str | None = None  # why it could not be scored
    recorded: bool = False  # val_f1 is its own run's (refitted on train+val), not re-scored
    short_accuracy: float | None = None  # on the short-text slice, by its published model

    def figure(self) -> str:
        """Where ``val_f1`` comes from, for the printed reason."""
        if self.recorded:
            return "its recorded validation F1: it was refitted on train+val"
        return "re-scored"


SHORT_MARGIN = 0.01


@dataclass(frozen=True)
class ShortRule:
    """The challenger's accuracy on the short texts, and how much less than production's it
    may be; ``texts`` (``text``, ``label``) are where the champion is scored."""

    accuracy: float
    texts: pd.DataFrame
    margin: float = SHORT_MARGIN


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    mode: str,
    challenger_f1: float,
    trained_on: TrainedOn,
    champion: Champion | None,
    short: ShortRule | None = None,
) -> Decision:
    """The rule in this module's docstring; ``challenger_f1`` is validation F1."""
    if mode == "never":
        return Decision(False, "promotion disabled (promote=never)")
    if mode == "always":
        return Decision(True, "promotion forced (promote=always)")
    if champion is None:
        return Decision(True, "no production model yet")
    production = f"production v{champion.version}"
    if champion.trained_on is None:
        return Decision(
            False,
            f"{production} does not record what it was trained on (data digest, split seed, "
            f"sample): not comparable; {ELSEWHERE}",
        )
    if champion.trained_on != trained_on:
        differences = "; ".join(champion.trained_on.differences(trained_on))
        return Decision(
            False,
            f"{production} was trained on other data ({differences}): not comparable; {ELSEWHERE}",
        )
    if champion.error is not None:
        return Decision(
            True,
            f"{production} could not be scored on validation ({champion.error}); "
            f"validation F1 {challenger_f1:.4f}",
        )
    if champion.val_f1 is None:
        raise ValueError("a comparable champion must be scored before deciding")
    relation = ">=" if challenger_f1 >= champion.val_f1 else "<"
    validation = (
        f"validation F1 {challenger_f1:.4f} {relation} {production}'s {champion.val_f1:.4f} "
        f"on the same validation rows ({champion.figure()})"
    )
    if relation == "<" or short is None or champion.short_accuracy is None:
        return Decision(relation == ">=", validation)
    loss = champion.short_accuracy - short.accuracy
    if loss > short.margin:
        return Decision(
            False,
            f"{validation}, but short-text accuracy {short.accuracy:.4f} is "
            f"{100 * loss:.1f} points under its {champion.short_accuracy:.4f}, more than the "
            f"{100 * short.margin:g} allowed (short_margin)",
        )
    return Decision(
        True,
        f"{validation}; short-text accuracy {short.accuracy:.4f} against its "
        f"{champion.short_accuracy:.4f}",
    )


def current(client: MlflowClient, name: str = MODEL_NAME) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None


REFITTED = "train+val"  # the `fit_on` tag of a version fitted again on its validation rows


def recorded_f1(client: MlflowClient, version: ModelVersion) -> float:
    """A version's own validation F1: its run's metric, else its (rounded) tag."""
    if version.run_id:
        with contextlib.suppress(MlflowException, KeyError):
            return float(client.get_run(version.run_id).data.metrics["val_f1"])
    return float(version.tags["val_f1"])


def find_champion(
    client: MlflowClient,
    name: str,
    trained_on: TrainedOn,
    val: pd.DataFrame,
    short_texts: pd.DataFrame | None = None,
) -> Champion | None:
    """The production version, scored on ``val`` only if it was trained on the same data; a
    refitted one by its recorded validation F1 (see the module docstring). With
    ``short_texts``, a comparable one is scored on them too."""
    version = current(client, name)
    if version is None:
        return None
    champion = Champion(version.version, TrainedOn.from_tags(version.tags))
    if champion.trained_on != trained_on:
        return champion
    refitted = version.tags.get("fit_on") == REFITTED
    if refitted:
        try:
            champion = replace(champion, val_f1=recorded_f1(client, version), recorded=True)
        except (KeyError, ValueError):
            return replace(champion, error="refitted on train+val, and no validation F1 recorded")
    if refitted and short_texts is None:
        return champion
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
        if not refitted:
            answers = model.predict(val[["text"]])
            champion = replace(champion, val_f1=evaluate.score_answers(val["label"], answers)["f1"])
        if short_texts is not None:
            answers = model.predict(short_texts[["text"]])
            accuracy = evaluate.score_answers(short_texts["label"], answers)["accuracy"]
            champion = replace(champion, short_accuracy=accuracy)
    except Exception as error:  # noqa: BLE001 - a production model that cannot score loses
        return Champion(version.version, champion.trained_on, error=str(error))
    return champion


def champion_challenger(
    mode: str,
    name: str,
    version: str,
    val_f1: float,
    trained_on: TrainedOn,
    val: pd.DataFrame,
    alias: str = ALIAS,
    short: ShortRule | None = None,
) -> Decision:
    """Decide for ``version`` (validation F1 ``val_f1`` on ``val``, against production), move
    ``alias`` to it if chosen, and record the decision on the active run.

    ``alias`` is ``production`` for a training run. A model retrained on feedback moves
    ``challenger`` instead: shadow, canary and the promotion gate decide whether it serves."""
    client = MlflowClient()
    with promotion_lock.held(name, client):
        checked = False
        for _ in range(ATTEMPTS):
            champion = (
                find_champion(client, name, trained_on, val, short.texts if short else None)
                if mode == "if_better"
                else None
            )
            decision = decide(mode, val_f1, trained_on, champion, short)
            if champion is not None and champion.val_f1 is not None:
                print(
                    f"  production is version {champion.version}: validation F1 "
                    f"{champion.val_f1:.4f} on this run's validation rows ({champion.figure()})"
                )
            if decision.promote and not checked:
                try:
                    check(name, version)
                except PromotionError as error:
                    cannot = Decision(False, f"the new version cannot serve: {error}")
                    record(cannot, champion, alias, announce=False)  # the entry point says it
                    raise
                checked = True
            if decision.promote and mode == "if_better":
                latest = current(client, name)
                faced = champion.version if champion else None
                if (latest.version if latest else None) != faced:
                    print("  the production alias moved meanwhile: deciding again")
                    continue
            record(decision, champion, alias, registered=(name, version))
            if decision.promote:
                # The last step: nothing after the move can fail the run once the model serves.
                try:
                    move_alias(name, version, alias)
                except Exception as error:
                    with contextlib.suppress(Exception):
                        mlflow.set_tags(
                            {
                                "promotion.decision": "kept",
                                "promotion.reason": f"the move failed: {error}",
                            }
                        )
                    raise
            return decision
        decision = Decision(False, "the production alias kept moving during the comparison")
        record(decision, None, alias)
        return decision


def record(
    decision: Decision,
    champion: Champion | None,
    alias: str = ALIAS,
    announce: bool = True,
    registered: tuple[str, str] | None = None,
) -> None:
    """The decision on the active run, and on the ``registered`` (name, version) as tags."""
    if registered is not None:
        # Information the run holds too: a registry that refuses it cannot undo a decision.
        with contextlib.suppress(Exception):
            for key, value in (("decision", _verdict(decision)), ("reason", decision.reason)):
                MlflowClient().set_model_version_tag(*registered, f"promotion.{key}", value)
    mlflow.set_tags(
        {
            "promotion.decision": _verdict(decision),
            "promotion.reason": decision.reason,
            "promotion.champion": champion.version if champion else "none",
            "promotion.alias": alias,
        }
    )
    if champion is not None and champion.val_f1 is not None:
        mlflow.log_metric("champion_val_f1", champion.val_f1)
    if champion is not None and champion.short_accuracy is not None:
        mlflow.log_metric("champion_short_accuracy", champion.short_accuracy)
    if not announce:
        return
    if decision.promote and alias == ALIAS:
        print(f"This is the best model! Promoting to production... ({decision.reason})")
    elif decision.promote:
        print(f"Better than production: it becomes the {alias} ({decision.reason}).")
    else:
        print(f"Not promoted: {decision.reason}.")


def _verdict(decision: Decision) -> str:
    return "promoted" if decision.promote else "kept"


def check(name: str, version: str) -> None:
    """The version exists, loads in this process and predicts the input example sensibly."""
    client = MlflowClient()
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise PromotionError(f"{name} has no version {version}.") from None
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        predictions = loaded.predict(INPUT_EXAMPLE)
    except Exception as error:  # noqa: BLE001 - any failure means it cannot serve
        raise PromotionError(f"version {version} does not load or predict: {error}") from None
    missing = {"sentiment", "confidence"} - set(getattr(predictions, "columns", []))
    if missing:
        raise PromotionError(f"version {version} output lacks {', '.join(sorted(missing))}.")
    if list(predictions["sentiment"]) != list(reversed(LABELS)):
        raise PromotionError(
            f"version {version} gets the input example wrong: {list(predictions['sentiment'])}."
        )


def move_alias(name: str, version: str, alias: str = ALIAS) -> None:
    MlflowClient().set_registered_model_alias(name, alias, version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Point the production alias at a version.")
    parser.add_argument("--version", required=True, help="registered version number")
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument(
        "--require-agreement",
        type=float,
        default=0.0,
        help="share of reviews the gateway's shadow must have found labelled as production "
        "does (0: no gate); see pipelines/promotion_gate.py",
    )
    parser.add_argument(
        "--gateway-url",
        default=promotion_gate.DEFAULT_GATEWAY,
        help="the gateway, or every replica's address, comma-separated",
    )
    parser.add_argument(
        "--min-compared",
        type=float,
        default=promotion_gate.MIN_COMPARED,
        help="reviews the shadows must have compared before the gate decides",
    )
    args = parser.parse_args(argv)
    why = promotion_gate.check_gate(
        args.gateway_url, args.version, args.require_agreement, int(args.min_compared)
    )
    if why:
        print(f"Not promoted: {why}.", file=sys.stderr)
        return 1
    try:
        check(args.model_name, args.version)
    except PromotionError as error:
        print(f"Not promoted: {error}", file=sys.stderr)
        return 1
    with promotion_lock.held(args.model_name):
        before = current(MlflowClient(), args.model_name)
        move_alias(args.model_name, args.version)
    was = f" (was version {before.version})" if before else ""
    print(f"{args.model_name}@{ALIAS} -> version {args.version}{was}")

    try:  # the alias has moved: the card's address is information, not a step that can fail
        print(f"Model card: {location(args.model_name, args.version)}")
    except Exception as error:  # noqa: BLE001
        print(f"Model card: not found ({error})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
