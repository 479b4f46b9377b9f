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

{{/* The companion StatefulSet's name, and its headless Service's. */}}
{{- define "fraudstream.companionName" -}}
{{- printf "%s-companion" (include "fraudstream.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Pod selector of one component, (dict "root" $ "component" "worker"|"companion"). The
component keeps the two StatefulSets' selectors apart: the scoring workers' ("worker", as
before the companion existed: a StatefulSet's selector cannot change) never matches the
companion's pods, so the API Service, the headless Service and each PodDisruptionBudget select
one of them only. */}}
{{- define "fraudstream.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "fraudstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fraudstream.componentLabels" -}}
{{ include "fraudstream.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The scoring workers' selector and labels (also on the objects both StatefulSets share). */}}
{{- define "fraudstream.selectorLabels" -}}
{{ include "fraudstream.componentSelectorLabels" (dict "root" . "component" "worker") }}
{{- end -}}

{{- define "fraudstream.labels" -}}
{{ include "fraudstream.componentLabels" (dict "root" . "component" "worker") }}
{{- end -}}

{{/* FRAUD_ROLES of the scoring workers: `roles` beside the companion, every role without it. */}}
{{- define "fraudstream.workerRoles" -}}
{{- if .Values.companion.enabled -}}
{{- .Values.roles -}}
{{- else -}}
score,join,aggregate
{{- end -}}
{{- end -}}

{{/* FRAUD_ROLES of the companion: those of join and aggregate that `roles` leaves out (as
fraudstream.settings.companion_roles, which `make demo` and the bench use). */}}
{{- define "fraudstream.companionRoles" -}}
{{- $have := splitList "," .Values.roles -}}
{{- $rest := list -}}
{{- range list "join" "aggregate" -}}
{{- if not (has . $have) -}}
{{- $rest = append $rest . -}}
{{- end -}}
{{- end -}}
{{- join "," $rest -}}
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
