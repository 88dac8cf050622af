"""The controller: kopf wiring (handlers), the reconcile loop, the pure revision plan, status."""
