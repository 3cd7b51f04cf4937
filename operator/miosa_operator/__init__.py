"""miosa-operator: immutable, numbered DeploymentVersions for Kubernetes."""

__version__ = "0.1.0"
