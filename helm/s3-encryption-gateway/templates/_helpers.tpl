{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "s3-encryption-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless it already contains it. */}}
{{- define "s3-encryption-gateway.fullname" -}}
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

{{- define "s3-encryption-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "s3-encryption-gateway.labels" -}}
helm.sh/chart: {{ include "s3-encryption-gateway.chart" . }}
{{ include "s3-encryption-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "s3-encryption-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "s3-encryption-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the Secret mounted at /etc/s3gw/secrets ("" when there is none). */}}
{{- define "s3-encryption-gateway.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.data }}
{{- include "s3-encryption-gateway.fullname" . }}
{{- end }}
{{- end }}

{{/*
The gateway configuration file: .Values.config with the listen address set by
the chart. Fails when a secret is written inline (it would land in a ConfigMap).
*/}}
{{- define "s3-encryption-gateway.config" -}}
{{- $config := deepCopy (default (dict) .Values.config) }}
{{- $backend := default (dict) $config.backend }}
{{- if $backend.secret_access_key }}
{{- fail "config.backend.secret_access_key must not be inline: use secret_access_key_file (see secrets) or S3GW_BACKEND__SECRET_ACCESS_KEY (see env)" }}
{{- end }}
{{- range $i, $cred := default (list) $config.credentials }}
{{- if (default (dict) $cred).secret_access_key }}
{{- fail (printf "config.credentials[%d].secret_access_key must not be inline: use secret_access_key_file (see secrets) or S3GW_CREDENTIALS (see env)" $i) }}
{{- end }}
{{- end }}
{{- $keyring := default (dict) $config.keyring }}
{{- range $id, $key := default (dict) $keyring.keys }}
{{- $spec := default (dict) $key }}
{{- if or $spec.base64 $spec.passphrase }}
{{- fail (printf "config.keyring.keys.%s must not hold key material inline: use base64_file / passphrase_file (see secrets) or S3GW_KEYRING__KEYS__* (see env)" $id) }}
{{- end }}
{{- end }}
{{- $_ := set $config "listen" (dict "host" "0.0.0.0" "port" 8080) }}
{{- if .Values.metrics.enabled }}
{{- $observability := default (dict) $config.observability }}
{{- $_ := set $observability "metrics_port" (int .Values.metrics.port) }}
{{- $_ := set $observability "metrics_host" "0.0.0.0" }}
{{- $_ := set $config "observability" $observability }}
{{- end }}
{{- toYaml $config }}
{{- end }}
