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
Default image of a stack component ("ping" or "pong"): stackImages.<name> when set, else the
operator image's repository directory and tag with the component's name, so all three follow
appVersion (or image.tag) together.
*/}}
{{- define "pingpong-operator.stackImage" -}}
{{- $name := .name }}
{{- $root := .root }}
{{- $set := index $root.Values.stackImages $name }}
{{- if $set }}
{{- $set }}
{{- else }}
{{- printf "%s/%s:%s" (dir $root.Values.image.repository) $name (default $root.Chart.AppVersion $root.Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
PINGPONG_DEFAULT_GATEWAY: "namespace/name", "name" (each stack's namespace), or "" (none).
*/}}
{{- define "pingpong-operator.defaultGateway" -}}
{{- $gw := .Values.defaultGateway }}
{{- if and $gw.name $gw.namespace }}
{{- printf "%s/%s" $gw.namespace $gw.name }}
{{- else if $gw.name }}
{{- $gw.name }}
{{- end }}
{{- end }}
