"""A small Triton client for text generation models shaped like the TensorRT-LLM ensemble.

The model's metadata decides what is sent: ``text_input`` and ``max_tokens`` always,
``exclude_input_in_output`` when the model has it, ``return_perf_metrics`` when the model reports
Medusa acceptance, and ``stream`` when streaming is possible (gRPC and a decoupled model). Shapes
and datatypes come from the metadata, so batched and unbatched models both work.

Each worker thread owns its client (tritonclient clients are not thread-safe). Connection
failures, timeouts and server-side errors are retried a bounded number of times, then raised as
``InfraError``; nothing here ever turns a failure into a result.
"""

from __future__ import annotations

import importlib
import logging
import queue
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar
from urllib.parse import urlsplit

import numpy as np

from medusa_common.contract import InfraError, UserError
from medusa_common.triton import GRPC_PORT, HTTP_PORT

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": HTTP_PORT, "grpc": GRPC_PORT}
TEXT_INPUT = "text_input"
MAX_TOKENS = "max_tokens"
TEXT_OUTPUT = "text_output"
ACCEPTANCE_OUTPUTS = ("total_accepted_draft_tokens", "total_draft_tokens")
_NUMPY_TYPES = {"BOOL": np.bool_, "INT32": np.int32, "INT64": np.int64, "UINT32": np.uint32,
                "UINT64": np.uint64, "FP32": np.float32, "FP16": np.float16, "BYTES": np.object_}
# Statuses that say the request itself is wrong for this model: retrying cannot help.
_PERMANENT_STATUSES = {"400", "404", "StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND",
                       "StatusCode.UNIMPLEMENTED", "StatusCode.PERMISSION_DENIED", "StatusCode.UNAUTHENTICATED",
                       "401", "403"}

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Endpoint:
    url: str
    protocol: str  # http | grpc
    address: str  # host:port, as tritonclient wants it
    ssl: bool
    model: str


def parse_endpoint(url: str, *, protocol: str | None = None, model: str = "ensemble") -> Endpoint:
    """``http://host:8000``, ``grpc://host:8001``, ``host:port`` or ``.../v2/models/NAME[/generate]``."""
    if not url or not url.strip():
        raise UserError("an endpoint URL is empty; give e.g. http://model.namespace.svc:8000")
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"//{text}")
    scheme = parts.scheme.lower()
    if scheme not in ("", "http", "https", "grpc", "grpcs"):
        raise UserError(f"endpoint {url}: unsupported scheme {scheme!r}; use http://, https://, grpc:// or host:port")
    chosen = protocol or ("grpc" if scheme.startswith("grpc") else "http")
    if chosen not in DEFAULT_PORTS:
        raise UserError(f"unsupported protocol {chosen!r}; use http or grpc")
    if scheme.startswith("grpc") and chosen != "grpc":
        raise UserError(f"endpoint {url} is a gRPC URL but --protocol {chosen} was given")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise UserError(f"endpoint {url} has an invalid port") from None
    if not host:
        raise UserError(f"endpoint {url} names no host")
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) >= 3 and segments[:2] == ["v2", "models"]:
        model = segments[2]
    elif segments:
        raise UserError(f"endpoint {url}: the path must be empty or /v2/models/NAME")
    host_part = f"[{host}]" if ":" in host else host
    address = f"{host_part}:{port or DEFAULT_PORTS[chosen]}"
    return Endpoint(url=text, protocol=chosen, address=address, ssl=scheme in ("https", "grpcs"), model=model)


@dataclass(frozen=True)
class ModelInterface:
    """What the served model accepts and returns (from its metadata and config)."""

    inputs: dict[str, tuple[str, tuple[int, ...]]]  # name -> (datatype, request shape)
    outputs: frozenset[str]
    decoupled: bool

    @property
    def reports_acceptance(self) -> bool:
        return "return_perf_metrics" in self.inputs and all(o in self.outputs for o in ACCEPTANCE_OUTPUTS)

    def can_stream(self, protocol: str) -> bool:
        return protocol == "grpc" and self.decoupled and "stream" in self.inputs


def request_shape(dims: Sequence) -> tuple[int, ...]:
    """Metadata dims with every variable dimension (-1, batch included) set to 1."""
    return tuple(1 if int(d) < 0 else int(d) for d in dims)


def model_interface(metadata: dict, config: dict, endpoint: Endpoint) -> ModelInterface:
    """Build the interface from metadata and config JSON (HTTP and gRPC spell them alike)."""
    config = config.get("config", config)
    inputs = {i["name"]: (i["datatype"], request_shape(i.get("shape", []))) for i in metadata.get("inputs", [])}
    outputs = frozenset(o["name"] for o in metadata.get("outputs", []))
    missing = [n for n in (TEXT_INPUT, MAX_TOKENS) if n not in inputs] + [n for n in (TEXT_OUTPUT,) if n not in outputs]
    if missing:
        raise InfraError(f"model {endpoint.model} at {endpoint.url} lacks {', '.join(missing)}: it is not a text "
                         "generation model shaped like the TensorRT-LLM ensemble")
    decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    if decoupled and endpoint.protocol == "http":
        raise UserError(f"model {endpoint.model} at {endpoint.url} is decoupled (streaming): use --protocol grpc "
                        "with the gRPC port")
    return ModelInterface(inputs=inputs, outputs=outputs, decoupled=decoupled)


@dataclass
class Generation:
    """One finished request: the generated text (prompt removed) and its timing."""

    text: str
    start: float
    end: float
    first_response: float | None = None  # streaming only
    accepted_draft_tokens: int | None = None
    draft_tokens: int | None = None
    chunks: int = 1

    @property
    def latency(self) -> float:
        return self.end - self.start


class Deadline:
    """The overall time budget of a run; requests never wait beyond it."""

    def __init__(self, seconds: float | None):
        self.expires = time.monotonic() + seconds if seconds else None
        self.seconds = seconds

    def remaining(self) -> float | None:
        return None if self.expires is None else self.expires - time.monotonic()

    def check(self) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise InfraError(f"validation did not finish within --timeout-seconds {self.seconds:g}; raise it or "
                             "measure fewer examples")

    def cap(self, seconds: float) -> float:
        left = self.remaining()
        return seconds if left is None else max(0.1, min(seconds, left))


def error_status(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return str(status()) if callable(status) else ""


def is_retryable(exc: BaseException) -> bool:
    """Connection problems, timeouts and server-side failures may pass on a retry; rejections do not."""
    return error_status(exc) not in _PERMANENT_STATUSES


def describe_error(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    status = error_status(exc)
    text = (text or type(exc).__name__).strip().splitlines()[0][:300]
    return f"{text} (status {status})" if status and status != "None" else text


def _strip_prompt(text: str, prompt: str) -> str:
    return text[len(prompt):] if prompt and text.startswith(prompt) else text


def _first_int(array) -> int | None:
    if array is None:
        return None
    flat = np.asarray(array).reshape(-1)
    return int(flat[0]) if flat.size else None


def _decode_text(array) -> str:
    if array is None:
        return ""
    parts = []
    for item in np.asarray(array, dtype=object).reshape(-1):
        parts.append(item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item))
    return "".join(parts)


@dataclass
class TritonGenerator:
    """Generation requests against one endpoint, with retries and per-thread clients."""

    endpoint: Endpoint
    request_timeout: float = 300.0
    retries: int = 3
    backoff: float = 0.5
    deadline: Deadline = field(default_factory=lambda: Deadline(None))
    name: str = "endpoint"
    workers: int = 8
    interface: ModelInterface | None = None
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _clients: list = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- clients --------------------------------------------------------------------------

    def _new_client(self):
        if self.endpoint.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            return grpcclient.InferenceServerClient(self.endpoint.address, ssl=self.endpoint.ssl)
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.endpoint.address, ssl=self.endpoint.ssl,
                                                connection_timeout=min(self.request_timeout, 30.0),
                                                network_timeout=self.request_timeout)

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _drop_client(self) -> None:
        """Forget this thread's client after a failure, so a retry starts a fresh connection."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken client may fail; nothing to do
                pass

    @property
    def pool(self) -> ThreadPoolExecutor:
        """Long-lived worker threads, so each keeps its connection from one phase to the next."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix=self.name)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass

    # --- retries --------------------------------------------------------------------------

    def _with_retries(self, what: str, call: Callable[[], T]) -> T:
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            self.deadline.check()
            try:
                return call()
            except (UserError, InfraError):
                raise
            except Exception as exc:  # noqa: BLE001 - every client failure is classified below
                self._drop_client()
                reason = describe_error(exc)
                if not is_retryable(exc):
                    raise InfraError(f"{self.name} {self.endpoint.url} rejected {what}: {reason}") from None
                if attempt == attempts:
                    raise InfraError(f"{self.name} {self.endpoint.url} failed {what} after {attempts} attempt(s): "
                                     f"{reason}") from None
                delay = min(self.backoff * 2 ** (attempt - 1), 10.0) * (1 + random.random() / 4)
                log.warning("%s %s: %s failed (%s); retrying in %.1fs", self.name, self.endpoint.url, what, reason,
                            delay)
                time.sleep(self.deadline.cap(delay))
        raise AssertionError("unreachable")

    # --- readiness and introspection ------------------------------------------------------

    def _probe(self) -> ModelInterface:
        client = self._client()
        timeout = self.deadline.cap(min(self.request_timeout, 30.0))
        model = self.endpoint.model
        if self.endpoint.protocol == "grpc":
            live = client.is_server_live(client_timeout=timeout)
            ready = live and client.is_model_ready(model, client_timeout=timeout)
        else:
            live = client.is_server_live()
            ready = live and client.is_model_ready(model)
        if not ready:
            raise ConnectionError(f"the server is up but model {model} is not ready" if live else
                                  "the server is not live")
        if self.endpoint.protocol == "grpc":
            metadata = client.get_model_metadata(model, as_json=True, client_timeout=timeout)
            config = client.get_model_config(model, as_json=True, client_timeout=timeout)
        else:
            metadata = client.get_model_metadata(model)
            config = client.get_model_config(model)
        return model_interface(metadata, config, self.endpoint)

    def connect(self) -> ModelInterface:
        """Wait (bounded) until the model is ready and learn its interface."""
        self.interface = self._with_retries("the readiness check", self._probe)
        log.info("%s %s: model %s ready (decoupled=%s, acceptance metrics=%s)", self.name, self.endpoint.url,
                 self.endpoint.model, self.interface.decoupled, self.interface.reports_acceptance)
        return self.interface

    # --- generation -----------------------------------------------------------------------

    def _inputs(self, prompt: str, max_tokens: int, stream: bool):
        module = importlib.import_module(f"tritonclient.{self.endpoint.protocol}")
        assert self.interface is not None, "connect() first"
        values = {TEXT_INPUT: prompt.encode("utf-8"), MAX_TOKENS: max_tokens}
        if "exclude_input_in_output" in self.interface.inputs:
            values["exclude_input_in_output"] = True
        if self.interface.reports_acceptance:
            values["return_perf_metrics"] = True
        if "stream" in self.interface.inputs:
            values["stream"] = stream
        inputs = []
        for name, value in values.items():
            datatype, shape = self.interface.inputs[name]
            array = np.full(shape, value, dtype=_NUMPY_TYPES.get(datatype, np.object_))
            tensor = module.InferInput(name, list(shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        names = [TEXT_OUTPUT] + (list(ACCEPTANCE_OUTPUTS) if self.interface.reports_acceptance else [])
        outputs = [module.InferRequestedOutput(n) for n in names]
        return inputs, outputs

    def _infer_once(self, prompt: str, max_tokens: int) -> Generation:
        inputs, outputs = self._inputs(prompt, max_tokens, stream=False)
        client = self._client()
        start = time.perf_counter()
        if self.endpoint.protocol == "grpc":
            result = client.infer(self.endpoint.model, inputs, outputs=outputs,
                                  client_timeout=self.deadline.cap(self.request_timeout))
        else:
            result = client.infer(self.endpoint.model, inputs, outputs=outputs)
        end = time.perf_counter()
        return Generation(text=_strip_prompt(_decode_text(result.as_numpy(TEXT_OUTPUT)), prompt), start=start,
                          end=end, accepted_draft_tokens=_first_int(result.as_numpy(ACCEPTANCE_OUTPUTS[0])),
                          draft_tokens=_first_int(result.as_numpy(ACCEPTANCE_OUTPUTS[1])))

    def _stream_once(self, prompt: str, max_tokens: int, stream: bool) -> Generation:
        """One request over a gRPC stream: the only way to call a decoupled model. With ``stream``
        off the model answers in one response, so no first-token time is recorded."""
        inputs, outputs = self._inputs(prompt, max_tokens, stream=stream)
        client = self._client()
        responses: queue.Queue = queue.Queue()
        timeout = self.deadline.cap(self.request_timeout)
        client.start_stream(callback=lambda result, error: responses.put((time.perf_counter(), result, error)),
                            stream_timeout=timeout)
        finished = False
        try:
            start = time.perf_counter()
            client.async_stream_infer(self.endpoint.model, inputs, outputs=outputs, enable_empty_final_response=True)
            text, first, accepted, drafted, chunks = "", None, None, None, 0
            while True:
                left = timeout - (time.perf_counter() - start)
                try:
                    stamp, result, error = responses.get(timeout=max(left, 0.01))
                except queue.Empty:
                    raise TimeoutError(f"no complete response within {timeout:g}s") from None
                if error is not None:
                    raise error
                piece = _decode_text(result.as_numpy(TEXT_OUTPUT))
                if piece:
                    chunks += 1
                    text += piece
                    if first is None:
                        first = stamp
                # Counters are cumulative; the last response that carries them wins.
                counts = [_first_int(result.as_numpy(name)) for name in ACCEPTANCE_OUTPUTS]
                accepted = counts[0] if counts[0] is not None else accepted
                drafted = counts[1] if counts[1] is not None else drafted
                final = result.get_response().parameters.get("triton_final_response")
                if final is not None and final.bool_param:
                    finished = True
                    return Generation(text=_strip_prompt(text, prompt), start=start, end=stamp,
                                      first_response=first if stream else None, accepted_draft_tokens=accepted,
                                      draft_tokens=drafted, chunks=max(chunks, 1))
        finally:
            client.stop_stream(cancel_requests=not finished)

    def generate(self, prompt: str, max_tokens: int, *, stream: bool = False) -> Generation:
        assert self.interface is not None, "connect() first"
        if stream or self.interface.decoupled:
            return self._with_retries("a streaming generate request",
                                      lambda: self._stream_once(prompt, max_tokens, stream))
        return self._with_retries("a generate request", lambda: self._infer_once(prompt, max_tokens))


def map_bounded(func: Callable[[T], R], items: Sequence[T], concurrency: int,
                pool: ThreadPoolExecutor | None = None) -> list[R]:
    """Apply ``func`` to every item with at most ``concurrency`` calls in flight; results keep order.

    ``pool`` must have at least ``concurrency`` threads; without one a temporary pool is used.

    The first failure stops new work and is raised once the calls in flight have returned.
    """
    if not items:
        return []
    results: list = [None] * len(items)
    pending = iter(enumerate(items))
    failed = threading.Event()
    lock = threading.Lock()

    def worker() -> None:
        while not failed.is_set():
            with lock:
                nxt = next(pending, None)
            if nxt is None:
                return
            index, item = nxt
            try:
                results[index] = func(item)
            except BaseException:
                failed.set()
                raise

    lanes = max(1, min(concurrency, len(items)))
    own_pool = pool is None
    executor = pool or ThreadPoolExecutor(max_workers=lanes)
    try:
        futures = [executor.submit(worker) for _ in range(lanes)]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
    finally:
        if own_pool:
            executor.shutdown(wait=True)
    return results
