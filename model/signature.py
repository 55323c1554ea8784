"""The model's contract with its callers: input, output, parameters and an example."""

from __future__ import annotations

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from model.names import LABELS

__all__ = ["INPUT_EXAMPLE", "LABELS", "SIGNATURE"]

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "text")]),
    # `known_terms`: distinct vocabulary features (words and n-grams) found in the text; at 0
    # the answer is the training prior with confidence 0.5, not a reading of the text.
    outputs=Schema(
        [
            ColSpec("string", "sentiment"),
            ColSpec("double", "confidence"),
            ColSpec("long", "known_terms"),
            # `known_term_ratio`: share of the text's distinct words in the vocabulary (0 without
            # words); what the monitoring watches for text unlike the training reviews.
            ColSpec("double", "known_term_ratio"),
        ]
    ),
    # `explain` adds an `explanation` column: the terms that pushed the decision most.
    params=ParamSchema([ParamSpec("explain", "boolean", False), ParamSpec("top_terms", "long", 5)]),
)

INPUT_EXAMPLE = pd.DataFrame(
    {
        "text": [
            "This movie was absolutely amazing! The acting was superb.",
            "Terrible movie. Waste of time. Disappointing and boring.",
        ]
    }
)
