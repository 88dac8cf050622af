"""The operator's own Prometheus metrics (kopf has none) and its liveness endpoint."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from .api.v1alpha1 import PHASES


RECONCILES = Counter("medusa_operator_reconciles_total", "Reconcile passes, by result.", ["result"])
RECONCILE_SECONDS = Histogram("medusa_operator_reconcile_duration_seconds", "Time one reconcile pass took.")
QUEUE_WAIT_SECONDS = Histogram("medusa_operator_queue_wait_seconds",
                               "Time a model waited in the work queue for a worker, from the change or deadline "
                               "that queued it.",
                               buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
EVENTS_DROPPED = Counter("medusa_operator_events_dropped_total",
                         "Events not posted because too many were already waiting for the API server.")
MODEL_PHASE = Gauge("medusa_model_phase", "1 for the phase each MedusaModel is in, 0 for the others.",
                    ["namespace", "name", "phase"])
PHASE_SECONDS = Counter("medusa_model_phase_seconds_total", "Time MedusaModels spent in each phase.",
                        ["namespace", "name", "phase"])
BUILD_SECONDS = Histogram("medusa_engine_build_duration_seconds", "Engine build durations reported by Jobs.",
                          buckets=(60, 300, 600, 1200, 1800, 3600, 7200, 14400))
VALIDATION_SECONDS = Histogram("medusa_validation_duration_seconds",
                               "From candidate start to verdict.", buckets=(60, 300, 600, 1800, 3600, 7200))
ENGINE_CACHE = Counter("medusa_engine_cache_lookups_total", "Engine cache lookups, by result.", ["result"])
VALIDATIONS = Counter("medusa_validations_total", "Validation verdicts, by result.", ["result"])
SPEEDUP = Gauge("medusa_model_speedup", "Validated tokens/s speedup over the base model.", ["namespace", "name"])
LEADER = Gauge("medusa_operator_leader", "1 while this replica holds the leader lease.")


def set_phase(namespace: str, name: str, phase: str | None) -> None:
    for candidate in PHASES:
        MODEL_PHASE.labels(namespace, name, candidate).set(1 if candidate == phase else 0)


def forget_model(namespace: str, name: str) -> None:
    for candidate in PHASES:
        for metric in (MODEL_PHASE, PHASE_SECONDS):
            try:
                metric.remove(namespace, name, candidate)
            except KeyError:
                pass
    try:
        SPEEDUP.remove(namespace, name)
    except KeyError:
        pass


async def start_health_server(host: str, port: int) -> web.AppRunner:
    """/healthz answers while the event loop runs; a wedged loop fails the liveness probe."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
