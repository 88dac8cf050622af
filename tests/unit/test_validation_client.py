"""Endpoint parsing, model interfaces, error classification, bounded concurrency, dead endpoints."""

import socket
import threading
import time

import pytest
from tritonclient.utils import InferenceServerException

from medusa_common.contract import InfraError, UserError
from medusa_builder.validation.client import (Deadline, TritonGenerator, describe_error, is_retryable, map_bounded,
                                              model_interface, parse_endpoint, request_shape)


@pytest.mark.parametrize("url, protocol, address, model", [
    ("http://model.ns.svc:8000", "http", "model.ns.svc:8000", "ensemble"),
    ("http://model.ns.svc", "http", "model.ns.svc:8000", "ensemble"),
    ("grpc://10.0.0.1:9001", "grpc", "10.0.0.1:9001", "ensemble"),
    ("localhost:8001", "http", "localhost:8001", "ensemble"),
    ("http://h:8000/v2/models/llama/generate", "http", "h:8000", "llama"),
    ("http://[::1]:8000", "http", "[::1]:8000", "ensemble"),
])
def test_endpoint_forms(url, protocol, address, model):
    endpoint = parse_endpoint(url)
    assert (endpoint.protocol, endpoint.address, endpoint.model) == (protocol, address, model)


def test_explicit_protocol_and_its_default_port():
    assert parse_endpoint("h", protocol="grpc").address == "h:8001"
    assert parse_endpoint("https://h", model="m").ssl is True


@pytest.mark.parametrize("url, protocol, fragment", [
    ("", None, "empty"),
    ("ftp://h:1", None, "unsupported scheme"),
    ("grpc://h:8001", "http", "gRPC URL but --protocol http"),
    ("http://h:8000/other", None, "/v2/models/NAME"),
    ("http://h:port", None, "invalid port"),
])
def test_bad_endpoints_are_user_errors(url, protocol, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_endpoint(url, protocol=protocol)


METADATA = {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [-1, 1]},
                       {"name": "max_tokens", "datatype": "INT32", "shape": [-1, 1]},
                       {"name": "stream", "datatype": "BOOL", "shape": [-1, 1]},
                       {"name": "return_perf_metrics", "datatype": "BOOL", "shape": [-1, 1]}],
            "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1, -1]},
                        {"name": "total_accepted_draft_tokens", "datatype": "INT32", "shape": [-1, 1]},
                        {"name": "total_draft_tokens", "datatype": "INT32", "shape": [-1, 1]}]}


def test_interface_from_http_style_metadata():
    interface = model_interface(METADATA, {"max_batch_size": 8}, parse_endpoint("http://h:8000"))
    assert interface.inputs["text_input"] == ("BYTES", (1, 1))
    assert interface.reports_acceptance and not interface.decoupled
    assert not interface.can_stream("grpc")


def test_interface_from_grpc_style_json_with_string_dims_and_a_decoupled_model():
    metadata = {"inputs": [{**i, "shape": [str(d) for d in i["shape"]]} for i in METADATA["inputs"]],
                "outputs": METADATA["outputs"][:1]}
    config = {"config": {"model_transaction_policy": {"decoupled": True}}}
    interface = model_interface(metadata, config, parse_endpoint("grpc://h:8001"))
    assert interface.inputs["max_tokens"] == ("INT32", (1, 1))
    assert interface.can_stream("grpc") and not interface.reports_acceptance
    with pytest.raises(UserError, match="decoupled.*--protocol grpc"):
        model_interface(metadata, config, parse_endpoint("http://h:8000"))


def test_a_model_that_is_not_a_text_generator_cannot_be_measured():
    metadata = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4]}],
                "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [4]}]}
    with pytest.raises(InfraError, match="lacks text_input, max_tokens, text_output"):
        model_interface(metadata, {}, parse_endpoint("http://h:8000"))


def test_request_shape_fixes_variable_dimensions():
    assert request_shape([-1, 1]) == (1, 1)
    assert request_shape(["-1", "3"]) == (1, 3)
    assert request_shape([]) == ()


def test_server_rejections_are_not_retried_but_outages_are():
    assert is_retryable(ConnectionRefusedError("refused"))
    assert is_retryable(TimeoutError("slow"))
    assert is_retryable(InferenceServerException("overloaded", status="503"))
    assert is_retryable(InferenceServerException("gone", status="StatusCode.UNAVAILABLE"))
    assert not is_retryable(InferenceServerException("bad input", status="400"))
    assert not is_retryable(InferenceServerException("bad", status="StatusCode.INVALID_ARGUMENT"))
    assert describe_error(InferenceServerException("boom\nmore", status="500")) == "boom (status 500)"


def test_map_bounded_keeps_order_and_never_exceeds_the_bound():
    in_flight, peak, lock = 0, 0, threading.Lock()

    def work(item):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return item * 2

    assert map_bounded(work, list(range(12)), 3) == [i * 2 for i in range(12)]
    assert peak == 3
    assert map_bounded(work, [], 3) == []


def test_map_bounded_stops_at_the_first_failure():
    started = []

    def work(item):
        started.append(item)
        if item == 1:
            raise InfraError("server down")
        time.sleep(0.01)
        return item

    with pytest.raises(InfraError, match="server down"):
        map_bounded(work, list(range(50)), 2)
    assert len(started) < 50


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_an_unreachable_endpoint_is_an_infrastructure_error_after_bounded_retries(scheme):
    url = f"{scheme}://127.0.0.1:{_closed_port()}"
    generator = TritonGenerator(parse_endpoint(url), retries=2, backoff=0.01, request_timeout=5, name="candidate")
    started = time.monotonic()
    with pytest.raises(InfraError, match=f"candidate {url} failed the readiness check after 3 attempt"):
        generator.connect()
    generator.close()
    assert time.monotonic() - started < 30


def test_a_spent_time_budget_is_an_infrastructure_error():
    deadline = Deadline(0.01)
    time.sleep(0.02)
    with pytest.raises(InfraError, match="did not finish within --timeout-seconds"):
        deadline.check()
    assert Deadline(None).remaining() is None
    assert Deadline(100).cap(500) <= 100
