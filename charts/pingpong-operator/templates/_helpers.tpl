{{/* Name of the chart, overridable with nameOverride. */}}
{{- define "pingpong-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name used as the prefix of every object: fullnameOverride, else the release name when it
already contains the chart name, else "<release>-<chart>". Truncated to a DNS label.
*/}}
{{- define "pingpong-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart label value: name-version. */}}
{{- define "pingpong-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Immutable selector labels of the operator pods. */}}
{{- define "pingpong-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pingpong-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "pingpong-operator.labels" -}}
helm.sh/chart: {{ include "pingpong-operator.chart" . }}
{{ include "pingpong-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: pingpong-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* ServiceAccount the operator runs as. */}}
{{- define "pingpong-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pingpong-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image reference: repository:tag[@digest]; the tag defaults to appVersion. */}}
{{- define "pingpong-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaced objects of every stack, exactly operator/src/rbac.rs PERMISSIONS
(operator/tests/rbac.rs and tests/deploy compare them with manifests/install.yaml):
- list/watch: the stack watch and `.owns()` on every child kind;
- patch: server-side apply of children and of the stack's status subresource;
- get: StatefulSets/Deployments (readiness while paused), Secrets (generate credentials once);
- delete: children the spec can stop asking for (Ingress, HTTPRoute, PDB, ServiceMonitor, and
  pong's provisioned PostgreSQL/Redis StatefulSet, Deployment, Services, NetworkPolicies);
- create/patch Events.
*/}}
{{- define "pingpong-operator.stackRules" -}}
- apiGroups: ["pingpong.dev"]
  resources: ["pingpongstacks"]
  verbs: ["list", "watch"]
- apiGroups: ["pingpong.dev"]
  resources: ["pingpongstacks/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* RBAC rules for leader election: one Lease in the release namespace. */}}
{{- define "pingpong-operator.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/*
Cluster-scoped RBAC rules: the start-up check for our CRD and the per-reconcile check whether
the HTTPRoute and ServiceMonitor CRDs exist.
*/}}
{{- define "pingpong-operator.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get"]
{{- end }}
