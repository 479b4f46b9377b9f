{{- define "fraudstream.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fraudstream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fraudstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fraudstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "fraudstream.labels" -}}
{{ include "fraudstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The Secret holding the SASL username and password, or "" without SASL. */}}
{{- define "fraudstream.saslSecret" -}}
{{- if .Values.kafka.sasl.existingSecret -}}
{{- .Values.kafka.sasl.existingSecret -}}
{{- else if .Values.kafka.sasl.username -}}
{{- printf "%s-kafka-sasl" (include "fraudstream.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "fraudstream.maxReplicas" -}}
{{- $max := int .Values.autoscaling.keda.maxReplicaCount -}}
{{- if or (le $max 0) (gt $max (int .Values.partitions)) -}}
{{- int .Values.partitions -}}
{{- else -}}
{{- $max -}}
{{- end -}}
{{- end -}}
