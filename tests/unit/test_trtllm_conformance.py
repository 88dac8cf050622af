"""The generated TensorRT-LLM repository against what the Triton TensorRT-LLM backend of
TensorRT-LLM 1.1.0 (Triton 25.12) requires.

TensorRT-LLM cannot run on this project's machines, so the backend's requirements are written
down here from its source and checked against the configs `package` renders. The backend lives
in the TensorRT-LLM repository under triton_backend/; the 25.12 container recipe
(triton-inference-server/tensorrtllm_backend, branch r25.12) builds it from TensorRT-LLM's
release/1.1 branch. Paths below are relative to the TensorRT-LLM repository.

Issue 23: the `tensorrt_llm` model must load (parameters read without a fallback), requests must
use the backend's input names (`seed`, not `random_seed`), `streaming` is reshaped like every other
scalar input, Medusa decoding is switched on, and `medusa_choices` is in the brace form the
backend parses, with indices its tree layout can hold.
"""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from medusa_builder.repository.trtllm import TrtllmRepositoryOptions, render_trtllm_configs
from medusa_common.tree import PRESETS, TreeError, normalise_tree

SRC = "triton_backend/inflight_batcher_llm/src"
UPSTREAM_TEMPLATE = "triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt"

# Parameters the backend reads with no fallback when a model instance starts. Its
# ModelState::GetParameter (model_state.cc) throws "Cannot find parameter with name: <key>" for a
# missing key, and the exception fails the model load. Parameters read inside a try block with a
# default (max_tokens_in_paged_kv_cache, enable_chunked_context, ...) may stay out.
UNCONDITIONAL_PARAMETERS = {
    "gpt_model_type": f"{SRC}/model_instance_state.cc: getBatchingTypeFromParams",
    "tokenizer_dir": f"{SRC}/model_instance_state.cc: getGuidedDecodingConfigFromParams",
    "xgrammar_tokenizer_info_path": f"{SRC}/model_instance_state.cc: getGuidedDecodingConfigFromParams",
    "guided_decoding_backend": f"{SRC}/model_instance_state.cc: getGuidedDecodingConfigFromParams",
}
# Read inside a try block, yet the instance refuses to start without it: the constructor of
# ModelInstanceState (model_instance_state.cc) requires gpt_model_path or encoder_model_path,
# and a decoder-only engine has only the first.
REQUIRED_IN_EFFECT = {"gpt_model_path": f"{SRC}/model_instance_state.cc: ModelInstanceState::ModelInstanceState"}

# Values the backend accepts for the parameters we write. A value that does not parse is caught
# by the same try block as a missing one and silently replaced by the default, so a typo would
# never be reported: every value is checked here instead.
BOOLEAN_VALUES = {"True", "true", "TRUE", "1", "False", "false", "FALSE", "0"}  # model_state.cc: GetParameter<bool>
ACCEPTED_VALUES = {
    "gpt_model_type": {"V1", "v1", "inflight_batching", "inflight_fused_batching"},  # getBatchingTypeFromParams
    "batch_scheduler_policy": {"max_utilization", "guaranteed_no_evict"},  # getSchedulerConfigFromParams
    "decoding_mode": {"top_k", "top_p", "top_k_top_p", "beam_search", "medusa", "redrafter", "lookahead",
                      "eagle"},  # getExecutorConfigFromParams
    # getGuidedDecodingConfigFromParams: an empty backend or tokenizer-info path turns guided decoding off.
    "guided_decoding_backend": {""},
    "xgrammar_tokenizer_info_path": {""},
}
BOOLEAN_PARAMETERS = {"enable_kv_cache_reuse", "exclude_input_in_output"}  # read with GetParameter<bool>
INTEGER_PARAMETERS = {"max_beam_width"}  # GetParameter<int32_t>: std::stoi
FLOAT_PARAMETERS = {"kv_cache_free_gpu_mem_fraction"}  # GetParameter<float>: std::stof
STRING_PARAMETERS = {"gpt_model_path", "tokenizer_dir", "executor_worker_path", "medusa_choices"}

# Request inputs the backend reads, by the names in InputFieldsNames ({SRC}/utils.h; "streaming" is
# kStreamingInputTensorName there), with the data type, dims and reshape its own config template
# (UPSTREAM_TEMPLATE) declares for them: (data type, dims, reshape or None).
UPSTREAM_INPUTS = {
    "input_ids": ("TYPE_INT32", [-1], None),
    "input_lengths": ("TYPE_INT32", [1], []),
    "request_output_len": ("TYPE_INT32", [1], []),
    "end_id": ("TYPE_INT32", [1], []),
    "pad_id": ("TYPE_INT32", [1], []),
    "temperature": ("TYPE_FP32", [1], []),
    "runtime_top_k": ("TYPE_INT32", [1], []),
    "runtime_top_p": ("TYPE_FP32", [1], []),
    "seed": ("TYPE_UINT64", [1], []),
    "streaming": ("TYPE_BOOL", [1], []),
    "return_perf_metrics": ("TYPE_BOOL", [1], []),
}
# Outputs, by the names in OutputFieldsNames ({SRC}/utils.h), as UPSTREAM_TEMPLATE declares them.
UPSTREAM_OUTPUTS = {
    "output_ids": ("TYPE_INT32", [-1, -1]),
    "sequence_length": ("TYPE_INT32", [-1]),
    "acceptance_rate": ("TYPE_FP32", [1]),
    "total_accepted_draft_tokens": ("TYPE_INT32", [1]),
    "total_draft_tokens": ("TYPE_INT32", [1]),
}

# cpp/tensorrt_llm/runtime/utils/speculativeChoicesUtils.cpp, computePrefix: each index of a path
# takes a 4-bit chunk of a 64-bit prefix, so indices must stay below 2**4 and paths within 64 / 4.
CHOICE_INDEX_BITS = 4
PREFIX_BITS = 64


def parse_choices_like_the_backend(text: str) -> list[list[int]]:
    """What the backend makes of a medusa_choices value: a port of csvStrToVecVecInt and
    csvStrToVecInt ({SRC}/utils.cc). It reads up to each '}', drops one leading '{', splits the
    rest on ',' (stoi skips leading blanks), then skips to just past the next ','. A fragment
    that runs into the end of the text without a '}' is dropped, as the C++ loop does."""
    out: list[list[int]] = []
    pos = 0
    while True:
        end = text.find("}", pos)
        fragment = text[pos:] if end < 0 else text[pos:end]
        if not fragment or end < 0:
            break
        if fragment[0] == "{":
            fragment = fragment[1:]
        numbers = [int(part) for part in fragment.split(",") if part.strip()]
        assert numbers, f"empty path in {text!r}: the backend throws 'Empty vector'"
        out.append(numbers)
        comma = text.find(",", end + 1)
        pos = len(text) if comma < 0 else comma + 1
        while pos < len(text) and text[pos].isspace():
            pos += 1
    assert out, f"{text!r} parses to nothing: the backend throws 'Empty vector of vector'"
    return out


def tensorrt_llm_config(tree=PRESETS["mc_sim_7b_63"]) -> model_config_pb2.ModelConfig:
    options = TrtllmRepositoryOptions(max_batch_size=8, max_input_len=2048, tree=tuple(tuple(p) for p in tree))
    return text_format.Parse(render_trtllm_configs(options)["tensorrt_llm"], model_config_pb2.ModelConfig())


def parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


@pytest.mark.parametrize("tree", [PRESETS["mc_sim_7b_63"], []], ids=["medusa", "base-only"])
def test_every_parameter_read_without_a_fallback_is_present(tree) -> None:
    params = parameters(tensorrt_llm_config(tree))
    for name, where in {**UNCONDITIONAL_PARAMETERS, **REQUIRED_IN_EFFECT}.items():
        assert name in params, f"the backend reads {name} with no fallback ({where}); the model would not load"
    assert params["gpt_model_path"], "an empty engine path leaves the instance with no model"


def test_every_parameter_value_parses_the_way_the_backend_reads_it() -> None:
    params = parameters(tensorrt_llm_config())
    known = (set(ACCEPTED_VALUES) | BOOLEAN_PARAMETERS | INTEGER_PARAMETERS | FLOAT_PARAMETERS | STRING_PARAMETERS
             | set(UNCONDITIONAL_PARAMETERS) | set(REQUIRED_IN_EFFECT))
    assert set(params) <= known, f"parameters not checked against the backend's source: {set(params) - known}"
    for name, value in params.items():
        if name in ACCEPTED_VALUES:
            assert value in ACCEPTED_VALUES[name], f"{name}={value!r} is not a value the backend accepts"
        if name in BOOLEAN_PARAMETERS:
            assert value in BOOLEAN_VALUES, f"{name}={value!r} does not parse as a boolean"
        if name in INTEGER_PARAMETERS:
            int(value)
        if name in FLOAT_PARAMETERS:
            float(value)
    assert params["max_beam_width"] == "1", "Medusa decoding does not support beam search"


def test_inputs_use_the_backends_names_types_and_shapes() -> None:
    config = tensorrt_llm_config()
    inputs = {i.name: i for i in config.input}
    assert "random_seed" not in inputs, "the backend reads the seed from an input named 'seed'"
    assert {"seed", "streaming"} <= set(inputs)
    for name, tensor in inputs.items():
        assert name in UPSTREAM_INPUTS, f"the backend reads no input named {name!r}; it would be ignored"
        dtype, dims, reshape = UPSTREAM_INPUTS[name]
        assert model_config_pb2.DataType.Name(tensor.data_type) == dtype, name
        assert list(tensor.dims) == dims, name
        if reshape is None:
            assert not tensor.HasField("reshape"), name
        else:
            assert tensor.HasField("reshape") and list(tensor.reshape.shape) == reshape, \
                f"{name} needs reshape: {{ shape: [ ] }} like every scalar input of the backend"
    outputs = {o.name: o for o in config.output}
    for name, tensor in outputs.items():
        assert name in UPSTREAM_OUTPUTS, f"the backend writes no output named {name!r}"
        assert (model_config_pb2.DataType.Name(tensor.data_type), list(tensor.dims)) == UPSTREAM_OUTPUTS[name]
    assert {"output_ids", "sequence_length"} <= set(outputs), "the backend fails a request without them"


def test_medusa_decoding_is_on_and_a_base_engine_keeps_the_default() -> None:
    assert parameters(tensorrt_llm_config())["decoding_mode"] == "medusa"
    base = parameters(tensorrt_llm_config([]))
    assert "decoding_mode" not in base and "medusa_choices" not in base


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_choices_are_in_the_brace_form_the_backend_parses(name: str) -> None:
    tree = PRESETS[name]
    text = parameters(tensorrt_llm_config(tree))["medusa_choices"]
    assert text.startswith("{") and text.endswith("}")
    assert parse_choices_like_the_backend(text) == tree
    assert all(0 <= i < 2 ** CHOICE_INDEX_BITS for path in tree for i in path)
    assert max(len(p) for p in tree) <= PREFIX_BITS // CHOICE_INDEX_BITS


def test_the_port_of_the_backends_parser_is_faithful_to_its_quirks() -> None:
    assert parse_choices_like_the_backend("{0}, {0, 0}, {1}") == [[0], [0, 0], [1]]
    assert parse_choices_like_the_backend("{0},{1, 2}") == [[0], [1, 2]]
    # A path left open at the end is lost: the reason the brace form is written whole, by hand.
    assert parse_choices_like_the_backend("{0}, {1") == [[0]]


def test_indices_the_backend_cannot_pack_are_refused_before_a_build() -> None:
    top = 2 ** CHOICE_INDEX_BITS - 1
    assert normalise_tree([[0], [top]], num_heads=2) == [[0], [top]]
    with pytest.raises(TreeError, match="below 16.*4 bits"):
        normalise_tree([[0], [top + 1]], num_heads=2)
