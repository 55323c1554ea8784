"""The gateway's parts, wired once per app and kept on `app.state.services`.

Routes take what they need from there (`request.app.state.services`), so no route has to be
handed its collaborators one by one, and starting and stopping them is in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.api.dataplane import DataPlane
from gateway.experiments.canary import Canary
from gateway.experiments.challenger import Challenger, challenger_for
from gateway.experiments.shadow import Shadow
from gateway.observability.feedback import FeedbackStore
from gateway.observability.live_monitor import LiveMonitor
from gateway.observability.metrics import Metrics
from gateway.observability.prediction_log import PredictionLog
from gateway.serving.registry import Registry
from gateway.serving.rollout import Controller, controller
from gateway.serving.scoring import Scorer
from gateway.settings import Settings


@dataclass(eq=False)
class Services:
    settings: Settings
    rollout: Controller  # which scoring server is live
    scorer: Scorer
    metrics: Metrics
    monitor: LiveMonitor
    prediction_log: PredictionLog
    feedback: FeedbackStore
    dataplane: DataPlane
    # With a challenger alias (and scoring servers this gateway runs): its supervisor, the
    # shadow that compares it with production, and the canary that lets it answer.
    challenger: Challenger | None = None
    shadow: Shadow | None = None
    canary: Canary | None = None

    @classmethod
    def wire(cls, settings: Settings) -> Services:
        rollout = controller(settings, Registry(settings))
        scorer = Scorer(settings, rollout)
        metrics = Metrics(rollout, scorer)
        monitor = LiveMonitor(settings, rollout)
        metrics.registry.register(monitor)
        challenger = challenger_for(settings, rollout)
        shadow = Shadow(settings, challenger, metrics.registry) if challenger else None
        canary = Canary(settings, challenger) if challenger else None
        if canary is not None:
            metrics.registry.register(canary)
        return cls(
            settings=settings,
            rollout=rollout,
            scorer=scorer,
            metrics=metrics,
            monitor=monitor,
            prediction_log=monitor.log,
            feedback=monitor.feedback,
            dataplane=DataPlane(settings, rollout, scorer, monitor.log, canary, shadow),
            challenger=challenger,
            shadow=shadow,
            canary=canary,
        )

    async def start(self) -> None:
        self.monitor.start()
        await self.rollout.start()
        if self.challenger is not None:
            await self.challenger.start()
        if self.shadow is not None:
            self.shadow.start()

    async def close(self) -> None:
        if self.shadow is not None:
            await self.shadow.close()
        if self.canary is not None:
            await self.canary.aclose()
        if self.challenger is not None:
            await self.challenger.close()
        await self.rollout.close()
        await self.scorer.aclose()
        self.monitor.close()


def services(request: Request) -> Services:
    """The app's services, for a route."""
    return request.app.state.services
