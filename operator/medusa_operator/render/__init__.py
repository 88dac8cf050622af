"""Pure rendering: a spec and observed facts in, Kubernetes manifests (plain dicts) out. No I/O."""
