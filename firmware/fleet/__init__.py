"""A fleet of simulated devices from one manifest: many `Device`s in one process (runner.py),
or one device per pod on Kubernetes (k8s.py); docs/fleet.md."""
