{{- define "outpost.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "outpost.fullname" -}}
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

{{- define "outpost.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outpost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "outpost.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "outpost.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.role }}
{{- end }}

{{- define "outpost.scheme" -}}
{{- if .Values.tls.secretName }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/* Refuse values that would deploy something other than what was meant. */}}
{{- define "outpost.validate" -}}
{{- if not (has .Values.role (list "root" "site")) }}
{{- fail (printf "role %q: must be root or site" .Values.role) }}
{{- end }}
{{- if eq .Values.role "root" }}
{{- if not .Values.root.adminTokenSecret.name }}
{{- fail "root.adminTokenSecret.name: a root needs its admin token from a Secret (kubectl create secret generic outpost-admin --from-literal=admin-token=...)" }}
{{- end }}
{{- if ne (int .Values.root.replicas) 1 }}
{{- fail "root.replicas: must be 1 until the root tier (shared S3 storage and a JetStream cluster) is released" }}
{{- end }}
{{- if ne .Values.root.storage.type "filesystem" }}
{{- fail "root.storage.type: only filesystem until the root tier is released" }}
{{- end }}
{{- if .Values.root.cluster.enabled }}
{{- fail "root.cluster.enabled: not until the root tier is released" }}
{{- end }}
{{- else }}
{{- if not .Values.site.connectionStringSecret.name }}
{{- fail "site.connectionStringSecret.name: a site needs the Secret holding its connection string (kubectl create secret generic NAME --from-file=connection-string=NAME.cs)" }}
{{- end }}
{{- end }}
{{- if not (has .Values.service.type (list "ClusterIP" "NodePort" "LoadBalancer")) }}
{{- fail (printf "service.type %q: ClusterIP, NodePort or LoadBalancer" .Values.service.type) }}
{{- end }}
{{- end }}
