"""The MedusaModel API, version v1alpha1: the single source of truth for the CRD.

Every field carries a description (it becomes `kubectl explain` text). Rules the API server
enforces are declared next to the fields they guard: plain OpenAPI bounds and enums for simple
limits, CEL rules (``x-kubernetes-validations``) where a message has to say what to change.

Defaults live here, in the pydantic models, and are applied by the operator when it reads a
spec. The CRD carries no ``default`` values, so the stored object stays exactly what the user
applied and a GitOps diff never shows fields nobody wrote.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from medusa_common.toolchain import MEDUSA_CHOICE_DEPTH_LIMIT, MEDUSA_CHOICE_INDEX_LIMIT
from medusa_common.tree import AUTO_PRESET, MAX_TREE_NODES, PRESET_NAMES, describe_presets

GROUP = "inference.medusa.dev"
VERSION = "v1alpha1"
KIND = "MedusaModel"
PLURAL = "medusamodels"
SINGULAR = "medusamodel"
SHORT_NAMES = ["mm"]

MAX_TREE_DEPTH = MEDUSA_CHOICE_DEPTH_LIMIT

# Kubernetes names, in the regular-expression syntax CEL's matches() takes.
PVC_CLAIM_PATTERN = "[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"  # a DNS subdomain
LABEL_VALUE_PATTERN = "^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"  # at most 63 characters
LABEL_KEY_PATTERN = ("^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")  # [DNS-subdomain/]name
MAX_LABEL_KEY_LENGTH = 253 + 1 + 63
MAX_NODE_SELECTOR_LABELS = 32
MAX_RESOURCE_NAMES = 16
MAX_QUANTITY_LENGTH = 64

Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
                    "maxLength": MAX_QUANTITY_LENGTH}),
]

SOURCE_URI_SCHEMES = ("hf", "s3", "gs", "pvc")
ARTIFACT_URI_SCHEMES = ("s3", "gs", "pvc")




def cel(rule: str, message: str | None = None, *, message_expression: str | None = None,
        field_path: str | None = None) -> dict[str, str]:
    """One CEL validation rule for ``x-kubernetes-validations``."""
    out = {"rule": rule}
    if message:
        out["message"] = message
    if message_expression:
        out["messageExpression"] = message_expression
    if field_path:
        out["fieldPath"] = field_path
    return out


def uri_rules(schemes: tuple[str, ...], example: str) -> list[dict[str, str]]:
    """A location's scheme, and paths that stay where they point (no '..' segments; a pvc://
    location names a claim)."""
    listed = ", ".join(f"{s}://" for s in schemes)
    pattern = "^(" + "|".join(schemes) + ")://[^/]+"
    return [
        cel(f"self.matches('{pattern}')", message_expression=(
            f"'unsupported URI \"' + self + '\": use one of the schemes {listed} (for example {example})'")),
        cel("!self.matches('(^|/)[.][.](/|$)')", message_expression=(
            "'URI \"' + self + '\" contains a \\'..\\' segment: give the location without it'")),
        cel(f"!self.startsWith('pvc://') || self.matches('^pvc://{PVC_CLAIM_PATTERN}(/|$)')", message_expression=(
            "'URI \"' + self + '\" does not start with a PersistentVolumeClaim name after pvc://: lowercase "
            "letters, digits, \\'-\\' and \\'.\\', at most 253 characters'")),
    ]


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretRef(ApiModel):
    name: str = Field(description="Name of a Secret in the MedusaModel's namespace.", min_length=1, max_length=253)


class BaseModelSource(ApiModel):
    uri: Annotated[str, Field(
        description=(
            "Where the base model's Hugging Face weights are: hf://ORG/NAME, s3://BUCKET/PREFIX, "
            "gs://BUCKET/PREFIX or pvc://CLAIM/PATH."
        ),
        min_length=1, max_length=2048,
        json_schema_extra={"x-kubernetes-validations": uri_rules(SOURCE_URI_SCHEMES, "hf://meta-llama/Meta-Llama-3-8B-Instruct")},
    )]
    revision: str | None = Field(
        default=None, max_length=256,
        description="Pinned source revision: a Hugging Face commit, an object version or ETag. Pin it in production.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with credentials to read the source. Keys: HF_TOKEN for hf://; AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, optional AWS_ENDPOINT_URL and AWS_REGION for s3://; "
            "GOOGLE_HMAC_ACCESS_ID and GOOGLE_HMAC_SECRET for gs://."
        ),
    )


class TreeSpec(ApiModel):
    """Which candidate continuations are verified in each decoding step."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [
            cel("!(has(self.preset) && has(self.choices))",
                "set either tree.preset or tree.choices, not both"),
        ]},
    )
    preset: Literal[PRESET_NAMES] | None = Field(  # type: ignore[valid-type]  # the builder's preset names
        default=None,
        description=(f"A named tree: {describe_presets()}. Defaults to '{AUTO_PRESET}' when neither preset nor "
                     "choices is set."),
    )
    choices: Annotated[list[Annotated[list[int], Field(max_length=MAX_TREE_DEPTH)]] | None, Field(
        default=None, max_length=2 * MAX_TREE_NODES,
        description=(
            "An explicit tree: a list of paths, each a list of top-k ranks, one per head depth. "
            "[0] is head 1's best token, [0, 1] head 1's best then head 2's second best. The tree "
            f"must be prefix-closed and hold at most {MAX_TREE_NODES} nodes."
        ),
        json_schema_extra={"x-kubernetes-validations": [
            cel(f"size(self) <= {MAX_TREE_NODES}",
                f"tree.choices has more than {MAX_TREE_NODES} nodes: prune the tree or use a preset"),
            cel("self.all(p, size(p) > 0)",
                "every tree path needs at least one index: remove empty paths such as []"),
            cel("self.all(p, p.all(i, i >= 0))",
                "tree indices are top-k ranks and must be 0 or greater: remove negative indices"),
            cel(f"self.all(p, p.all(i, i < {MEDUSA_CHOICE_INDEX_LIMIT}))",
                f"tree indices must be below {MEDUSA_CHOICE_INDEX_LIMIT}: TensorRT-LLM packs each index of a path "
                f"into 4 bits, so use top-k ranks 0 to {MEDUSA_CHOICE_INDEX_LIMIT - 1} (the limit holds for every "
                "backend, so a tree can move between them)"),
        ]},
    )]


class MedusaHeadsSource(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [
            cel("!has(self.numHeads) || !has(self.tree) || !has(self.tree.choices) || "
                "self.tree.choices.all(p, size(p) <= self.numHeads)",
                "a tree.choices path is deeper than numHeads: each path holds at most one index per "
                "head; shorten the paths or raise numHeads",
                field_path=".tree.choices"),
        ]},
    )
    uri: Annotated[str, Field(
        description=(
            "Where the Medusa head checkpoint is (config.json plus medusa_lm_head.safetensors or "
            ".pt): hf://, s3://, gs:// or pvc://."
        ),
        min_length=1, max_length=2048,
        json_schema_extra={"x-kubernetes-validations": uri_rules(SOURCE_URI_SCHEMES, "s3://heads/llama3-8b-medusa/")},
    )]
    revision: str | None = Field(default=None, max_length=256, description="Pinned revision of the head checkpoint.")
    credentials_secret_ref: SecretRef | None = Field(
        default=None, description="Secret with credentials to read the heads (same keys as baseModel).",
    )
    num_heads: int | None = Field(
        default=None, ge=1, le=MAX_TREE_DEPTH,
        description="Number of heads. Optional: counted from the checkpoint's tensors; if given it must match.",
    )
    num_layers: int | None = Field(
        default=None, ge=1, le=8,
        description="Residual layers per head. Optional: counted from the checkpoint; if given it must match.",
    )
    tree: TreeSpec | None = Field(default=None, description="The token tree verified in each decoding step.")


class GpuSpec(ApiModel):
    count: int = Field(
        default=1, ge=0, le=8,
        description="GPUs per serving pod and per build Job; 0 runs the reference backend on CPUs only.",
    )
    product: str | None = Field(
        default=None, max_length=63,
        json_schema_extra={"x-kubernetes-validations": [cel(
            f"self.matches('{LABEL_VALUE_PATTERN}')",
            "engine.gpu.product is a node label value (of nvidia.com/gpu.product): at most 63 letters, digits, "
            "'-', '_' and '.', beginning and ending with a letter or digit, e.g. NVIDIA-H100-80GB-HBM3")]},
        description=(
            "GPU product (the node label nvidia.com/gpu.product), e.g. NVIDIA-H100-80GB-HBM3. Engines "
            "are tied to a GPU product: pods are scheduled only onto nodes with this label."
        ),
    )


def tensor_parallel_rules() -> list[dict[str, str]]:
    """A TensorRT-LLM serving pod runs one rank per GPU (docs/builder.md, tensor parallel serving),
    so its GPU count is the tensor-parallel size; the reference runtime runs on one device."""
    gpu_count = "((has(self.gpu) && has(self.gpu.count)) ? self.gpu.count : 1)"
    tp_size = "(has(self.tensorParallelSize) ? self.tensorParallelSize : 1)"
    return [
        cel(f"(has(self.backend) && self.backend == 'reference') || {gpu_count} == 0 || {gpu_count} == {tp_size}",
            "engine.gpu.count must equal engine.tensorParallelSize for backend tensorrt-llm: the serving pod runs "
            "one tensor-parallel rank per GPU, so set gpu.count to the tensor-parallel size (both default to 1)"),
        cel("!has(self.tensorParallelSize) || self.tensorParallelSize == 1 || !has(self.backend) || "
            "self.backend == 'tensorrt-llm'",
            "tensorParallelSize above 1 needs backend tensorrt-llm; the reference runtime runs on one device"),
    ]


class EngineSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [
            cel("!has(self.gpu) || !has(self.gpu.count) || !has(self.tensorParallelSize) || "
                "self.gpu.count == 0 || self.gpu.count >= self.tensorParallelSize",
                "engine.gpu.count must be at least engine.tensorParallelSize: each rank needs its own GPU"),
            cel("!has(self.gpu) || !has(self.gpu.count) || self.gpu.count > 0 || "
                "(has(self.backend) && self.backend == 'reference')",
                "engine.gpu.count 0 (CPU only) needs backend: reference; TensorRT-LLM engines need GPUs"),
            cel("!has(self.quantization) || self.quantization == 'none' || !has(self.backend) || "
                "self.backend == 'tensorrt-llm'",
                "quantization fp8 needs backend tensorrt-llm; the reference backend serves float16/bfloat16 only"),
            *tensor_parallel_rules(),
        ]},
    )
    backend: Literal["tensorrt-llm", "reference"] = Field(
        default="tensorrt-llm",
        description=(
            "tensorrt-llm: a TensorRT-LLM engine served by Triton's tensorrtllm backend (NVIDIA GPUs). "
            "reference: the PyTorch reference runtime served by Triton's Python backend (runs anywhere)."
        ),
    )
    dtype: Literal["float16", "bfloat16"] = Field(default="float16", description="Weights and activations type.")
    quantization: Literal["none", "fp8"] = Field(
        default="none", description="fp8 quantises the base model's weights (Hopper or newer); heads stay in dtype.",
    )
    tensor_parallel_size: Literal[1, 2, 4, 8] = Field(
        default=1,
        description=(
            "Tensor-parallel ranks: 1, 2, 4 or 8 (backend tensorrt-llm only). gpu.count must equal it: the serving "
            "pod runs one rank per GPU, rank 0 serving requests (the backend's leader mode)."
        ),
    )
    max_batch_size: int = Field(default=8, ge=1, le=1024, description="Largest batch the engine serves.")
    max_input_len: int = Field(default=4096, ge=16, le=1_048_576, description="Longest prompt in tokens.")
    max_output_len: int = Field(default=1024, ge=1, le=1_048_576, description="Most tokens generated per request.")
    gpu: GpuSpec = Field(default_factory=GpuSpec, description="GPU count and product for builds and serving.")
    builder_image: str | None = Field(
        default=None, max_length=512,
        description=(
            "Image for the build, package and validation Jobs. It pins the TensorRT-LLM version and so is "
            "part of the engine's cache key. Defaults to the operator's --builder-image."
        ),
    )


class ArtifactsSpec(ApiModel):
    uri: Annotated[str, Field(
        description="Where engines and model repositories are kept (the engine cache): s3://, gs:// or pvc://.",
        min_length=1, max_length=2048,
        json_schema_extra={"x-kubernetes-validations": uri_rules(ARTIFACT_URI_SCHEMES, "s3://engines/")},
    )]
    credentials_secret_ref: SecretRef | None = Field(
        default=None, description="Secret with credentials for the artifact store (AWS_* or GOOGLE_HMAC_* keys).",
    )


class AccuracySpec(ApiModel):
    dataset_uri: Annotated[str, Field(
        max_length=2048,
        json_schema_extra={"x-kubernetes-validations": uri_rules(SOURCE_URI_SCHEMES, "s3://evals/mmlu/")},
        description=(
            "Multiple-choice questions in the MMLU layout (dev/ and test/ CSVs per subject) or the Hugging "
            "Face parquet layout. Without it, accuracy is not gated."
        ),
    )] | None = None
    subjects: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=64, description="MMLU subjects to evaluate; empty means all in the dataset.",
    )
    shots: int = Field(default=5, ge=0, le=10, description="Few-shot examples per question (0 to 10).")
    max_examples_per_subject: int = Field(default=100, ge=1, le=100_000, description="Questions per subject.")
    min_score: float | None = Field(default=None, ge=0, le=1, description="Lowest accepted accuracy of the candidate.")
    max_drop_vs_base: float | None = Field(
        default=None, ge=0, le=1,
        description="Largest accepted accuracy drop against the base model, between 0 and 1 (0.01 = one point).",
    )


class ThroughputSpec(ApiModel):
    min_speedup: float | None = Field(
        default=None, ge=1.0, le=100,
        description="Lowest accepted candidate tokens/s divided by base tokens/s; at least 1.0.",
    )
    concurrency: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [1], max_length=16, description="Concurrent requests levels to measure.",
    )
    max_tokens: int = Field(default=256, ge=1, le=65536, description="Tokens generated per throughput request.")
    prompts_uri: Annotated[str, Field(
        max_length=2048, description="Prompts grouped by topic; defaults to the builder's own set.",
        json_schema_extra={"x-kubernetes-validations": uri_rules(SOURCE_URI_SCHEMES, "s3://evals/prompts/")},
    )] | None = None


class ValidationSpec(ApiModel):
    accuracy: AccuracySpec = Field(default_factory=AccuracySpec, description="Multiple-choice accuracy gate.")
    throughput: ThroughputSpec = Field(default_factory=ThroughputSpec, description="Tokens/second gate.")
    baseline: Literal["base-engine", "none"] = Field(
        default="base-engine",
        description=(
            "base-engine: build and serve the base model too and compare against it (needed for "
            "maxDropVsBase and minSpeedup); none: gate on absolute thresholds only."
        ),
    )
    timeout_seconds: int = Field(default=3600, ge=60, le=86400, description="Time limit of the validation Job.")


class AutoscalingSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [
            cel("!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
            cel("!has(self.minReplicas) || self.minReplicas > 0 || (has(self.provider) && self.provider == 'keda')",
                "minReplicas 0 (scale to zero) needs provider: keda"),
        ]},
    )
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest serving replicas (0 only with keda).")
    max_replicas: int = Field(default=1, ge=1, le=1000, description="Most serving replicas.")
    target_tokens_per_second_per_replica: int | None = Field(
        default=None, ge=1, le=10_000_000,
        description="Generated tokens per second each replica should carry; omit to disable autoscaling.",
    )
    provider: Literal["hpa", "keda"] = Field(
        default="hpa", description="hpa: HorizontalPodAutoscaler on a custom metric; keda: a KEDA ScaledObject.",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=3600,
        description="How long the load must stay low before a replica is removed (one at a time). Long enough "
                    "that a pod which took minutes to load its engine is not thrown away in a short lull.",
    )


class Toleration(ApiModel):
    key: str | None = Field(default=None, max_length=MAX_LABEL_KEY_LENGTH, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value to match with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description="Taint effect.")
    toleration_seconds: int | None = Field(default=None, description="How long a NoExecute taint is tolerated.")


def resource_list_rules(field: str) -> list[dict[str, str]]:
    return [
        cel(f"self.all(k, size(k) <= {MAX_LABEL_KEY_LENGTH} && k.matches('{LABEL_KEY_PATTERN}'))",
            f"serving.resources.{field}: each key is a resource name such as cpu, memory or nvidia.com/gpu"),
        cel(f"self.all(k, isQuantity(string(self[k])))",
            f"serving.resources.{field}: each value is a quantity such as 500m, 2, 16Gi or 1.5"),
    ]


class ResourceRequirements(ApiModel):
    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=MAX_RESOURCE_NAMES, description="Resource limits of the Triton container.",
        json_schema_extra={"x-kubernetes-validations": resource_list_rules("limits")})
    requests: dict[str, Quantity] | None = Field(
        default=None, max_length=MAX_RESOURCE_NAMES, description="Resource requests of the Triton container.",
        json_schema_extra={"x-kubernetes-validations": resource_list_rules("requests")})


class ServingSpec(ApiModel):
    image: str | None = Field(
        default=None, max_length=512,
        description="Triton image, e.g. nvcr.io/nvidia/tritonserver:<tag>-trtllm-python-py3. Defaults to the operator's.",
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec, description="Replicas and autoscaling.")
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="Extra requests and limits; GPUs come from engine.gpu.count. Changing them needs no rebuild.",
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=MAX_NODE_SELECTOR_LABELS, description="Extra node labels for serving pods.",
        json_schema_extra={"x-kubernetes-validations": [
            cel(f"self.all(k, size(k) <= {MAX_LABEL_KEY_LENGTH} && k.matches('{LABEL_KEY_PATTERN}'))",
                "serving.nodeSelector: each key is a label key: an optional DNS prefix and '/', then at most 63 "
                "letters, digits, '-', '_' and '.', e.g. cloud.google.com/gke-accelerator"),
            cel(f"self.all(k, self[k].matches('{LABEL_VALUE_PATTERN}'))",
                "serving.nodeSelector: each value is a label value: at most 63 letters, digits, '-', '_' and '.', "
                "beginning and ending with a letter or digit"),
        ]})
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Tolerations of serving pods.")


class RolloutSpec(ApiModel):
    keep_previous_revision: bool = Field(
        default=False, description="Keep the previous revision's Deployment (scaled to zero) after a promotion.",
    )
    unschedulable_timeout_seconds: int = Field(
        default=600, ge=30, le=86400,
        description="How long a candidate may wait for GPUs before the CandidateUnschedulable condition is set.",
    )
    deploy_timeout_seconds: int = Field(
        default=2400, ge=60, le=86400,
        description=(
            "How long the candidate's pods (and the baseline's) may take to become Ready, and a validated "
            "candidate to reach the serving replica count. Past it the candidate fails: its objects are "
            "deleted and a serving revision scaled down for it (makeRoom, rolling hand-over) is scaled back. "
            "The default leaves Triton's startup probe its 30 minutes to load an engine and 10 more to pull "
            "the image."
        ),
    )
    drain_seconds: int = Field(
        default=30, ge=0, le=3600,
        description=(
            "After a promotion, how long the previous revision keeps its pods (no longer behind the stable "
            "Service) so that requests in flight finish, before it is deleted (or scaled to zero with "
            "keepPreviousRevision)."
        ),
    )
    make_room: bool = Field(
        default=False,
        description=(
            "When the candidate's pods have waited unschedulableTimeoutSeconds for GPUs, scale the serving "
            "revision (and its autoscaler) to zero so the candidate can take its GPUs. Nothing serves until the "
            "candidate is promoted; if it fails, the serving revision is scaled back up. Off: the serving "
            "revision is never touched."
        ),
    )


def one_secret_per_store_rule(first: str, second: str, schemes: tuple[str, ...]) -> dict[str, str]:
    """Two locations in the same kind of store must not name different Secrets: a Job mounts
    every referenced Secret into one folder and holds one set of credentials per kind of store."""
    a, b = f"self.{first}", f"self.{second}"
    same_store = " || ".join(f"({a}.uri.startsWith('{s}://') && {b}.uri.startsWith('{s}://'))" for s in schemes)
    return cel(
        f"!(has({a}.credentialsSecretRef) && has({b}.credentialsSecretRef) && ({same_store})) || "
        f"{a}.credentialsSecretRef.name == {b}.credentialsSecretRef.name",
        f"{first}.uri and {second}.uri are in the same kind of store but name different credentialsSecretRefs; "
        "a Job holds one set of credentials per kind of store: put the keys in one Secret and name it in both",
    )


class MedusaModelSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [
            one_secret_per_store_rule("baseModel", "medusa", ("hf", "s3", "gs")),
            one_secret_per_store_rule("baseModel", "artifacts", ("s3", "gs")),
            one_secret_per_store_rule("medusa", "artifacts", ("s3", "gs")),
        ]},
    )
    base_model: BaseModelSource = Field(description="The base LLM the heads were trained for.")
    medusa: MedusaHeadsSource = Field(description="The Medusa head checkpoint and the token tree.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="How the engine is built.")
    artifacts: ArtifactsSpec = Field(description="Where engines and model repositories are kept.")
    validation: ValidationSpec = Field(default_factory=ValidationSpec, description="Gates a candidate must pass.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="How the promoted revision is served.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How revisions replace each other.")


PHASES = ("Pending", "Building", "Packaging", "Deploying", "Validating", "Promoting", "Serving", "Degraded", "Failed")
Phase = Literal[PHASES]  # type: ignore[valid-type]  # the tuple's members, each a literal


class Condition(ApiModel):
    type: str = Field(description="Ready, EngineBuilt, Packaged, Validated, Available, and others.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase reason for the last transition.")
    message: str = Field(default="", description="What happened, in words a person can act on.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The spec generation the condition refers to.")


class RevisionsStatus(ApiModel):
    current: str | None = Field(default=None, description="The revision the stable Service serves.")
    candidate: str | None = Field(default=None, description="The revision being built or validated.")
    previous: str | None = Field(default=None, description="The revision served before the current one.")
    failed: str | None = Field(
        default=None, description="The latest revision that failed; it is not retried until the spec changes or "
                                  "the annotation medusa.dev/retry gets a new value.",
    )
    retry_token: str | None = Field(
        default=None, description="The value of the medusa.dev/retry annotation when the revision last failed or "
                                  "was retried; another value retries it.",
    )
    current_repository_uri: str | None = Field(default=None, description="Model repository of the current revision.")
    current_image: str | None = Field(default=None, description="Triton image of the current revision.")
    candidate_repository_uri: str | None = Field(default=None, description="Model repository of the candidate.")
    candidate_base_repository_uri: str | None = Field(
        default=None, description="Model repository of the base model the candidate is compared with.",
    )
    candidate_since: str | None = Field(default=None, description="When the candidate started (RFC 3339).")
    serving_scaled_down: bool | None = Field(
        default=None, description="The serving revision is scaled to zero to make room for the candidate "
                                  "(rollout.makeRoom).",
    )
    deploying_since: str | None = Field(
        default=None, description="When the candidate's Deployments were first applied (RFC 3339).",
    )
    promotion_replicas: int | None = Field(
        default=None, description="Ready replicas the validated candidate must reach before it takes the stable "
                                  "Service: the serving revision's count when the promotion began.",
    )
    promotion_since: str | None = Field(default=None, description="When the promotion began (RFC 3339).")
    rolling_handover: bool | None = Field(
        default=None, description="The cluster cannot fit both revisions at full size: the promotion hands "
                                  "replicas over one at a time, with the stable Service selecting both.",
    )
    retiring: str | None = Field(
        default=None, description="The revision served before the current one, draining until retireAfter.",
    )
    retire_after: str | None = Field(default=None, description="When the retiring revision goes (RFC 3339).")
    restore_replicas: int | None = Field(
        default=None, description="Replicas the serving revision had before it was held for a candidate (scaled "
                                  "to zero to make room, or handing over replica by replica); it gets them back "
                                  "if the candidate does not take over.",
    )
    infra_retries: int | None = Field(
        default=None, description="Steps of the candidate re-run after infrastructure failures so far; each retry "
                                  "waits twice as long as the one before.",
    )


class EngineStatus(ApiModel):
    cache_key: str | None = Field(default=None, description="Content key of the engine in the artifact store.")
    uri: str | None = Field(default=None, description="Where the engine is.")
    reused: bool | None = Field(default=None, description="True when the engine came from the cache.")
    build_seconds: float | None = Field(default=None, description="How long the build took.")
    num_heads: int | None = Field(default=None, description="Heads counted in the checkpoint.")
    num_layers: int | None = Field(default=None, description="Residual layers per head counted in the checkpoint.")
    tree_size: int | None = Field(default=None, description="Nodes in the token tree.")
    tensorrt_llm_version: str | None = Field(
        default=None, description="TensorRT-LLM version that built the engine, as the build step reported it.",
    )


class TopicStatus(ApiModel):
    topic: str = Field(description="Prompt topic.")
    tokens_per_second: float | None = Field(default=None, description="Candidate tokens/s.")
    base_tokens_per_second: float | None = Field(default=None, description="Base model tokens/s.")
    speedup: float | None = Field(default=None, description="Candidate over base.")


class FailedThreshold(ApiModel):
    threshold: str = Field(description="The spec field of the threshold.")
    measured: float | None = Field(default=None, description="The measured value.")
    required: float | None = Field(default=None, description="The required value.")
    message: str = Field(default="", description="What failed, in words.")


class ValidationStatus(ApiModel):
    revision: str | None = Field(default=None, description="The revision this report is about.")
    passed: bool | None = Field(default=None, description="Whether every threshold held.")
    accuracy: float | None = Field(default=None, description="Candidate accuracy.")
    base_accuracy: float | None = Field(default=None, description="Base model accuracy.")
    tokens_per_second: float | None = Field(default=None, description="Candidate tokens/s.")
    base_tokens_per_second: float | None = Field(default=None, description="Base model tokens/s.")
    speedup: float | None = Field(default=None, description="Candidate tokens/s over base tokens/s.")
    mean_accepted_tokens: float | None = Field(default=None, description="Tokens accepted per decoding step.")
    per_topic: list[TopicStatus] = Field(default_factory=list, description="Tokens/s per prompt topic.")
    failures: list[FailedThreshold] = Field(default_factory=list, description="Thresholds that failed.")
    report_uri: str | None = Field(default=None, description="The full JSON report.")


class MedusaModelStatus(ApiModel):
    phase: Phase | None = Field(default=None, description="Where the model is in its lifecycle.")
    observed_generation: int | None = Field(default=None, description="The spec generation last acted on.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, EngineBuilt, Packaged, Validated, Available.")
    revisions: RevisionsStatus = Field(default_factory=RevisionsStatus, description="Current and candidate revisions.")
    engine: EngineStatus = Field(default_factory=EngineStatus, description="The engine of the latest revision.")
    validation: ValidationStatus = Field(default_factory=ValidationStatus, description="The latest validation.")
    endpoint: str | None = Field(default=None, description="In-cluster URL of the stable Service.")
    replicas: int | None = Field(default=None, description="Ready replicas of the served revision.")
    message: str | None = Field(default=None, description="A one-line summary of the state.")


class MedusaModel(ApiModel):
    """A Medusa LLM: base weights plus decoding heads, built, validated and served."""

    api_version: Literal["inference.medusa.dev/v1alpha1"] = Field(
        default="inference.medusa.dev/v1alpha1", alias="apiVersion")
    kind: Literal["MedusaModel"] = "MedusaModel"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MedusaModelSpec
    status: MedusaModelStatus | None = None
