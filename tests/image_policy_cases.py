"""One image policy and the verdicts it must give, shared by the operator's check
(tests/unit/test_image_policy.py) and the chart's admission policy on the API server
(tests/integration/test_image_policy_admission.py), so both state the same rule."""

DIGEST = "sha256:" + "0123456789abcdef" * 4
POLICY = ("registry.example.com/ml", "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3", "mirror.example.com/",
          DIGEST)

VERDICTS = [
    ("registry.example.com/ml/medusa-builder:1.0", True),  # below an allowed path
    ("registry.example.com/ml:2", True),  # the allowed name itself, any tag
    (f"registry.example.com/ml@{DIGEST.replace('0123', '4567')}", True),  # ...or digest
    ("registry.example.com/ml-evil/builder:1.0", False),  # a longer name is another name
    ("registry.example.com/mlx:1", False),
    ("registry.example.com.evil.io/ml/builder:1", False),  # another registry
    ("nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3", True),  # an exact tag
    (f"nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3@{DIGEST}", True),
    ("nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3-evil", False),
    ("nvcr.io/nvidia/tritonserver:24.01-py3", False),
    ("mirror.example.com/anything/at:all", True),  # an entry ending in '/'
    (f"docker.io/library/anything@{DIGEST}", True),  # pinned to an allowed digest
    (f"docker.io/library/anything@sha256:{'f' * 64}", False),
    ("docker.io/library/ubuntu:22.04", False),
]
