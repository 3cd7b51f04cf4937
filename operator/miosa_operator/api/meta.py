"""Names of the API: group, version, kinds, and the label and annotation keys we own.

Kept in one module without imports from the rest of the package so every layer (models,
CRD generation, handlers, the kubectl plugin) can share the same spelling.
"""

from __future__ import annotations

GROUP = "deploy.miosa.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

VERSION_KIND = "DeploymentVersion"
VERSION_PLURAL = "deploymentversions"
DEPLOYMENT_KIND = "Deployment"
DEPLOYMENT_PLURAL = "deployments"
RETENTION_KIND = "RetentionPolicy"
RETENTION_PLURAL = "retentionpolicies"
# The RetentionPolicy that applies to a namespace is the one with this name.
RETENTION_POLICY_NAME = "default"

# Labels mirrored from spec so that history per end-customer is a label selector.
LABEL_DEPLOYMENT = f"{GROUP}/deployment"
LABEL_KIND = f"{GROUP}/kind"
LABEL_CREATED_BY = f"{GROUP}/created-by"
LABEL_WORKSPACE = f"{GROUP}/external-workspace-id"
LABEL_USER = f"{GROUP}/external-user-id"
LABEL_PROJECT = f"{GROUP}/external-project-id"
LABEL_VERSION_NUMBER = f"{GROUP}/version-number"

# Annotations users set.
ANNOTATION_RETAIN = f"{GROUP}/retain"
# Written by the API server itself (a MutatingAdmissionPolicy of the chart), never by clients:
# on a Deployment, the user whose write last changed spec.promotedVersion ...
ANNOTATION_PROMOTED_BY = f"{GROUP}/promoted-by"
# ... and on a DeploymentVersion, the authenticated user who created it.
ANNOTATION_PUBLISHED_BY = f"{GROUP}/published-by"
# Optional, set by users or `kubectl miosa`: why (recorded in status.history).
ANNOTATION_CHANGE_CAUSE = f"{GROUP}/change-cause"
# Set by the operator on a Deployment when one of its versions becomes ready or fails, if the
# Deployment may act on it (Auto, or promotedVersion names it): "<version>:<state>".
ANNOTATION_VERSION_SETTLED = f"{GROUP}/version-settled"
# Set by users or `kubectl miosa retry` on a Deployment to retry a rollout that was reverted
# (or timed out): "<version>@<unique>"; the operator acts on each new value once and records
# it in status.lastRetryToken.  An annotation, so GitOps-owned spec stays untouched.
ANNOTATION_RETRY = f"{GROUP}/retry"

# On the objects the operator renders (render/): the live workload, its Service and budget,
# and a dynamic version's verification workload.
# The live workload's pods (its selector) and the Deployment's id on everything it owns
# (domain.ownership tells ours from same-named objects with it and the recorded uid).
LABEL_APP = f"{GROUP}/app"
LABEL_DEPLOYMENT_ID = f"{GROUP}/deployment-id"
# The verification workload's role ("verify") and version, and the version id it checks.
LABEL_ROLE = f"{GROUP}/role"
LABEL_VERSION = f"{GROUP}/version"
LABEL_VERSION_ID = f"{GROUP}/version-id"
# The version id in a pod template (promoting another version always rolls the pods).
ANNOTATION_VERSION_ID = f"{GROUP}/version-id"
# A hash of the rendered spec: the controller patches a workload only when it changed.
ANNOTATION_RENDERED_HASH = f"{GROUP}/rendered-hash"
# Set by the health gate on a verification workload whose pod a quota keeps from being
# created, so the ReplicaSet controller tries again now (controllers.health_gate).
ANNOTATION_NUDGED_AT = f"{GROUP}/nudged-at"
