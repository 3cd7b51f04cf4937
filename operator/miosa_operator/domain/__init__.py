"""Pure decisions over the API models: no Kubernetes client, no I/O, unit-tested directly."""
