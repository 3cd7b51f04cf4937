{{/* Names.  One operator per cluster: the CRDs, the user ClusterRoles and the kopf-managed
webhook configurations are cluster-wide. */}}
{{- define "miosa-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "miosa-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "miosa-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "miosa-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "miosa-operator.labels" -}}
{{ include "miosa-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: miosa-operator
{{- if .Values.manifestsMode }}
app.kubernetes.io/managed-by: kustomize
{{- else }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}
{{- end -}}

{{- define "miosa-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "miosa-operator.webhookService" -}}
{{- printf "%s-webhook" (include "miosa-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The DNS name the API server verifies the webhook's certificate against. */}}
{{- define "miosa-operator.webhookHost" -}}
{{- printf "%s.%s.svc" (include "miosa-operator.webhookService" .) .Release.Namespace -}}
{{- end -}}

{{- define "miosa-operator.artifactsService" -}}
{{- printf "%s-artifacts" (include "miosa-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The URL static pods download releases from. */}}
{{- define "miosa-operator.artifactsUrl" -}}
{{- printf "http://%s.%s.svc:%v" (include "miosa-operator.artifactsService" .) .Release.Namespace .Values.artifacts.port -}}
{{- end -}}

{{- define "miosa-operator.webhookConfiguration" -}}
{{- include "miosa-operator.fullname" . -}}
{{- end -}}

{{/* The JSON patch of a MutatingAdmissionPolicy that makes annotation `variables.key` equal
to the optional string `variables.wanted` (removing it when none). */}}
{{- define "miosa-operator.restoreAnnotation" -}}
variables.current == variables.wanted ? []
: !variables.wanted.hasValue()
? [JSONPatch{op: "remove", path: "/metadata/annotations/" + jsonpatch.escapeKey(variables.key)}]
: has(object.metadata.annotations)
? [JSONPatch{op: "add", path: "/metadata/annotations/" + jsonpatch.escapeKey(variables.key), value: variables.wanted.value()}]
: [JSONPatch{op: "add", path: "/metadata/annotations", value: {variables.key: variables.wanted.value()}}]
{{- end -}}

{{- define "miosa-operator.webhookSecret" -}}
{{- .Values.webhook.existingSecret | default (printf "%s-webhook-tls" (include "miosa-operator.fullname" .)) -}}
{{- end -}}

{{/* The Secret with MIOSA_S3_ACCESS_KEY_ID / MIOSA_S3_SECRET_ACCESS_KEY, or "" without one. */}}
{{- define "miosa-operator.storeSecret" -}}
{{- if .Values.store.s3.existingSecret -}}
{{- .Values.store.s3.existingSecret -}}
{{- else if or .Values.store.s3.accessKeyId .Values.store.s3.secretAccessKey -}}
{{- printf "%s-store" (include "miosa-operator.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "miosa-operator.fileStore" -}}
{{- if hasPrefix "file://" .Values.store.releasesUri -}}true{{- end -}}
{{- end -}}

{{/* Fail early on values that cannot work. */}}
{{- define "miosa-operator.validate" -}}
{{- if ne (int (.Values.replicas | default 1)) 1 -}}
{{- fail "replicas must be 1: more operator processes are shards (set shards instead)" -}}
{{- end -}}
{{- if or (lt (int .Values.shards) 1) (gt (int .Values.shards) 64) -}}
{{- fail "shards must be 1 to 64" -}}
{{- end -}}
{{- if and (gt (int .Values.shards) 1) (not (hasPrefix "s3://" .Values.store.releasesUri)) -}}
{{- fail "shards above 1 need an s3:// store.releasesUri (a file:// store lives in one pod's volume)" -}}
{{- end -}}
{{- if and .Values.store.s3.existingSecret (or .Values.store.s3.accessKeyId .Values.store.s3.secretAccessKey) -}}
{{- fail "store.s3: set existingSecret or accessKeyId/secretAccessKey, not both" -}}
{{- end -}}
{{- if ne (empty .Values.store.s3.accessKeyId) (empty .Values.store.s3.secretAccessKey) -}}
{{- fail "store.s3: accessKeyId and secretAccessKey must be set together" -}}
{{- end -}}
{{- if not (or (hasPrefix "s3://" .Values.store.releasesUri) (hasPrefix "file:///" .Values.store.releasesUri)) -}}
{{- fail "store.releasesUri must be s3://bucket[/prefix] or file:///absolute/dir" -}}
{{- end -}}
{{- if and (include "miosa-operator.fileStore" .) (not (hasPrefix "file:///var/lib/miosa-operator/" (printf "%s/" .Values.store.releasesUri))) -}}
{{- fail "a file:// store.releasesUri must be under /var/lib/miosa-operator (the mounted volume)" -}}
{{- end -}}
{{- if not (has .Values.store.volume.type (list "emptyDir" "persistentVolumeClaim")) -}}
{{- fail "store.volume.type must be emptyDir or persistentVolumeClaim" -}}
{{- end -}}
{{- if not (has .Values.logFormat (list "text" "json")) -}}
{{- fail "logFormat must be text or json" -}}
{{- end -}}
{{- end -}}

{{/* The HTTP API's pods: a name of their own, so that neither the operator's Deployment nor
the webhook Service ever selects them. */}}
{{- define "miosa-operator.apiSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-api" (include "miosa-operator.name" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
