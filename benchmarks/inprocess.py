"""The in-process baseline: a minimal FastAPI app that holds the model in its own memory.

This is how most projects of this kind serve a model: load it once with
``mlflow.pyfunc.load_model`` and call ``predict`` on a one-row DataFrame per request.
The serving benchmark runs it next to the gateway as the baseline to beat::

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 \\
        python -m benchmarks.inprocess --model-uri models:/SentimentClassifier/1 --port 8100

The endpoint is a plain ``def``, so FastAPI runs it in its thread pool, the usual pattern
(an ``async def`` calling ``predict`` would stall the event loop just the same on the GIL).
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager

import mlflow
import pandas as pd
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class PredictRequest(BaseModel):
    text: str


class PredictResponse(BaseModel):
    sentiment: str
    confidence: float


def create_app(model_uri: str) -> FastAPI:
    model = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # uvicorn opens the port only after this returns: listening means loaded.
        model["pyfunc"] = mlflow.pyfunc.load_model(model_uri)
        yield

    app = FastAPI(title="In-process baseline", lifespan=lifespan)

    @app.get("/ready")
    def ready() -> dict:
        return {"status": "ready", "model_uri": model_uri}

    @app.post("/predict", response_model=PredictResponse)
    def predict(request: PredictRequest) -> PredictResponse:
        if not request.text.strip():
            raise HTTPException(400, "Input text cannot be empty.")
        row = model["pyfunc"].predict(pd.DataFrame({"text": [request.text]})).iloc[0]
        return PredictResponse(sentiment=row["sentiment"], confidence=float(row["confidence"]))

    return app


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--model-uri", required=True, help="e.g. models:/SentimentClassifier/1")
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, default=8100)
    args = cli.parse_args()
    uvicorn.run(create_app(args.model_uri), host=args.host, port=args.port, access_log=False)


if __name__ == "__main__":
    main()
