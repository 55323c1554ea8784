"""Names every part of the system agrees on, defined once.

Standard library only: the gateway, the pipelines, the stack and the tests import it
without pulling in the model's dependencies.
"""

# The model's answers; a label's index is its class id in training data (0 negative, 1 positive).
LABELS = ("negative", "positive")
# Where the registry keeps the model, and the alias that names the version to serve.
MODEL_NAME = "SentimentClassifier"
ALIAS = "production"
# The alias of a version on trial (shadow, canary); a model retrained on feedback goes there.
CHALLENGER = "challenger"
# The experiments: training runs (and the batch scoring, and challengers retrained on feedback),
# and the monitoring job's checks.
TRAINING_EXPERIMENT = "Sentiment-Analysis"
MONITORING_EXPERIMENT = "Sentiment-Monitoring"
