"""Configuration the real node's components are started with (hack/realnode.py): containerd's
TOML and CoreDNS's manifests. Pure functions of their arguments."""

from __future__ import annotations

from pathlib import Path

def containerd_config(*, root: Path, state: Path, socket: Path, runc: str, cni_bin_dir: Path, cni_conf_dir: Path,
                      sandbox_image: str, registry_dir: Path) -> str:
    """containerd's configuration: CRI with runc, CNI and the sandbox image, every path inside
    the node's folder."""
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    cri_images = "plugins.'io.containerd.cri.v1.images'"
    return f"""version = 4
root = "{root}"
state = "{state}"
# Storage drivers and services this node does not use.
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri",
]

[plugins.'io.containerd.server.v1.grpc']
  address = "{socket}"

[plugins.'io.containerd.server.v1.ttrpc']
  address = "{socket}.ttrpc"

[{cri_runtime}]
  # root on this machine lacks CAP_SYS_RESOURCE: runc must not try to lower oom_score_adj.
  restrict_oom_score_adj = true
  # Network namespaces are mounted in the node's folder, not /var/run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false

[{cri_runtime}.containerd]
  default_runtime_name = "runc"

[{cri_runtime}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri_runtime}.containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  Root = "{state / 'runc'}"
  SystemdCgroup = false

[{cri_runtime}.cni]
  bin_dirs = ["{cni_bin_dir}"]
  conf_dir = "{cni_conf_dir}"

[{cri_images}]
  snapshotter = "overlayfs"

[{cri_images}.pinned_images]
  sandbox = "{sandbox_image}"

[{cri_images}.registry]
  # No registry configuration: every image is imported from an archive.
  config_path = "{registry_dir}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

# Paths outside the node's folder by default.
[plugins.'io.containerd.internal.v1.opt']
  path = "{root / 'opt'}"

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = "{root / 'image-verifier'}"
"""


def coredns_manifests(image: str, *, domain: str, service_ip: str, node_selector: dict[str, str],
                      tolerations: list[dict]) -> dict:
    """CoreDNS behind the kube-dns Service (at ``service_ip``), on the node the selector and
    tolerations pick. It serves the cluster's names only: nothing is forwarded, so a query for
    any other name stays on the machine."""
    corefile = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loop
}}
"""
    labels = {"k8s-app": "kube-dns"}
    ns = "kube-system"
    items = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": ns},
         "data": {"Corefile": corefile}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": labels},
             "template": {"metadata": {"labels": labels}, "spec": {
                 "serviceAccountName": "coredns",
                 "dnsPolicy": "Default",
                 "nodeSelector": node_selector,
                 "tolerations": tolerations,
                 "priorityClassName": "system-cluster-critical",
                 "containers": [{
                     "name": "coredns", "image": image, "imagePullPolicy": "Never",
                     "args": ["-conf", "/etc/coredns/Corefile"],
                     "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                     "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                     "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                     "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}},
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                 }],
                 "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
             }},
         }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
         "spec": {"clusterIP": service_ip, "selector": labels,
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}
