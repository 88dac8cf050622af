"""`medusa-operator`: run the MedusaModel controller.

    medusa-operator run --all-namespaces
    medusa-operator run --namespace models --namespace staging --no-leader-elect
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from .config import (DEFAULT_BUILDER_IMAGE, DEFAULT_REFERENCE_BUILDER_IMAGE, DEFAULT_REFERENCE_SERVING_IMAGE,
                     DEFAULT_SERVING_IMAGE, DIGEST, OperatorConfig)

log = logging.getLogger("medusa_operator")

# Record attributes that are not ``extra`` fields (kopf adds its settings and object references).
_STANDARD_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "settings", "k8s_skip"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_FIELDS})
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _json_object(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise argparse.ArgumentTypeError('expected a JSON object of strings, e.g. {"pool": "build"}')
    return value


def _json_list(text: str) -> list[dict]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise argparse.ArgumentTypeError('expected a JSON list of objects, e.g. [{"key": "pool", "operator": '
                                         '"Exists", "effect": "NoSchedule"}]')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medusa-operator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the controller")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port")
    run.add_argument("--health-port", type=int, default=8081, help="liveness /healthz port")
    run.add_argument("--bind-address", default="0.0.0.0", help="address the metrics and health servers bind")
    run.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                     help="elect one active replica through a Lease")
    run.add_argument("--lease-name", default="medusa-operator")
    run.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    run.add_argument("--identity", default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
                     help="this replica's name in the Lease")
    run.add_argument("--builder-image", default=DEFAULT_BUILDER_IMAGE, help="image of the build/package/validate Jobs")
    run.add_argument("--serving-image", default=DEFAULT_SERVING_IMAGE, help="Triton image of serving pods")
    run.add_argument("--reference-builder-image", default=None,
                     help="image of the Jobs, and of the serving pods' fetch, of models on the reference backend "
                          f"(default {DEFAULT_REFERENCE_BUILDER_IMAGE})")
    run.add_argument("--reference-serving-image", default=None,
                     help="image of the Triton container of serving pods of models on the reference backend "
                          f"(default {DEFAULT_REFERENCE_SERVING_IMAGE})")
    run.add_argument("--reference-image", default=None,
                     help="deprecated, removed in 0.2: one image for both --reference-builder-image and "
                          "--reference-serving-image (the builder image can serve too); the two flags win over it")
    run.add_argument("--job-node-selector", type=_json_object, default={}, metavar="JSON",
                     help='node labels every Job pod selects, as a JSON object, e.g. {"pool": "build"}')
    run.add_argument("--job-tolerations", type=_json_list, default=[], metavar="JSON",
                     help="tolerations added to every Job pod, as a JSON list of Kubernetes tolerations")
    run.add_argument("--allowed-image", action="append", default=[], type=_image_policy_entry,
                     metavar="PREFIX_OR_DIGEST",
                     help="allow models only builder and serving images under this reference prefix (e.g. "
                          "registry.example.com/ml) or pinned to this digest (sha256:...); repeatable; "
                          "without it every image is allowed")
    run.add_argument("--prometheus-url", default=OperatorConfig.prometheus_url,
                     help="Prometheus the KEDA trigger queries")
    run.add_argument("--reconcile-interval", type=_positive_seconds, default=OperatorConfig.reconcile_interval,
                     help="seconds before a model that waits for a missing Secret is looked at again; also the "
                          "first retry delay after a failed pass")
    run.add_argument("--resync-seconds", type=_positive_seconds, default=OperatorConfig.resync_seconds,
                     help="every model is reconciled at least this often, even when nothing changed")
    run.add_argument("--secret-check-seconds", type=_positive_seconds, default=OperatorConfig.secret_check_seconds,
                     help="how often each credentials Secret that models name is checked for (the operator may "
                          "get Secrets by name but not watch them)")
    run.add_argument("--workers", type=_positive_count, default=OperatorConfig.workers,
                     help="reconcile passes that may run at once (never two of the same model)")
    run.add_argument("--infra-retry-seconds", type=float, default=60.0,
                     help="wait before re-running a step that failed for infrastructure reasons; doubles with "
                          "each retry of the same revision, up to 32 times this")
    run.add_argument("--log-format", choices=["json", "text"], default="json")
    run.add_argument("--log-level", default="INFO")
    return parser


def _image_policy_entry(value: str) -> str:
    if not value or value.strip() != value:
        raise argparse.ArgumentTypeError("an allowed image is a non-empty reference prefix or a sha256: digest")
    if value.startswith("sha256:") and not DIGEST.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a digest: use sha256: and 64 lowercase hex digits")
    return value


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    if args.reference_image:
        log.warning("--reference-image is deprecated and will be removed in 0.2: use --reference-builder-image "
                    "and --reference-serving-image (the serving image lacks the builder steps, so pods get less)")
    return OperatorConfig(
        builder_image=args.builder_image, serving_image=args.serving_image,
        reference_builder_image=args.reference_builder_image or args.reference_image or DEFAULT_REFERENCE_BUILDER_IMAGE,
        reference_serving_image=args.reference_serving_image or args.reference_image or DEFAULT_REFERENCE_SERVING_IMAGE,
        job_node_selector=args.job_node_selector, job_tolerations=tuple(args.job_tolerations),
        namespaces=tuple(args.namespace), all_namespaces=not args.namespace,
        metrics_port=args.metrics_port, health_port=args.health_port, leader_elect=args.leader_elect,
        lease_name=args.lease_name, lease_namespace=args.lease_namespace, identity=args.identity,
        reconcile_interval=args.reconcile_interval, infra_retry_seconds=args.infra_retry_seconds,
        resync_seconds=args.resync_seconds, workers=args.workers, secret_check_seconds=args.secret_check_seconds,
        prometheus_url=args.prometheus_url, allowed_images=tuple(args.allowed_image),
    )


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpx2", "httpcore", "aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def run_operator(config: OperatorConfig, bind_address: str) -> int:
    import kopf
    from lightkube import AsyncClient
    from prometheus_client import start_http_server

    from . import metrics
    from .controller import handlers  # noqa: F401 - registers the kopf handlers
    from .controller.cache import ClusterCache, cache_http_client
    from .controller.kube import Kube
    from .controller.reconciler import Reconciler
    from .leader import LeaderElector

    start_http_server(config.metrics_port, addr=bind_address)
    health = await metrics.start_health_server(bind_address, config.health_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    elector = None
    if config.leader_elect:
        elector = LeaderElector(AsyncClient(), config.lease_namespace, config.lease_name, config.identity)
    # The caches fill and follow the cluster from the start, on the standby too: a replica that
    # takes over acts on them at once instead of listing every object first.
    http = cache_http_client()
    reconciler = Reconciler(Kube(), None, config, may_act=elector.is_leader if elector else None)
    cache = ClusterCache(http, None if config.all_namespaces else config.namespaces,
                         on_model=reconciler.model_changed, on_child=reconciler.wake)
    reconciler.cache = cache
    cache.start()

    async def close() -> None:
        await cache.stop()
        await http.aclose()
        await health.cleanup()

    if elector:
        acquire = asyncio.create_task(elector.acquire())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            acquire.cancel()
            await close()
            return 0
        stopping.cancel()
    lost = asyncio.Event()
    holder = asyncio.create_task(elector.hold(lost)) if elector else None

    async def stop_when_lost() -> None:
        await lost.wait()
        stop.set()

    # Every task of ours exists before kopf starts and spawns none: kopf waits 5 s for tasks
    # created while it runs to end before it returns, so a waiter left pending would make each
    # shutdown that long. kopf takes SIGTERM and SIGINT over while it runs; ``stop`` stops it
    # too, and the cleanup handler raises it (see controller/handlers.py).
    stopper = asyncio.create_task(stop_when_lost())
    log.info("starting controller", extra={"namespaces": list(config.namespaces) or "all",
                                           "identity": config.identity, "cached_objects": cache.object_count()})
    await kopf.operator(
        standalone=True,
        # Named here: kopf would otherwise derive one from the login name, which a container
        # user without a passwd entry (the chart's UID 65532) does not have.
        identity=config.identity,
        clusterwide=config.all_namespaces,
        namespaces=list(config.namespaces),
        memo=kopf.Memo(config=config, reconciler=reconciler, stop_flag=stop),
        stop_flag=stop,
    )
    # kopf's cleanup has stopped the reconcile workers: nothing acts any more.
    for task in (stopper, holder):
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # no renewal may follow the release
    if lost.is_set():
        log.error("stopping: leadership lost; exiting so that this replica restarts as a follower")
        await close()
        return 1
    if elector:
        await elector.release()
    await close()
    log.info("stopped", extra={"identity": config.identity})
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    sys.exit(asyncio.run(run_operator(config_from_args(args), args.bind_address)))
