{{/* The chart's name, or nameOverride. */}}
{{- define "ferrolb.name" -}}
{{- default "ferrolb" .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* Common labels. */}}
{{- define "ferrolb.labels" -}}
app.kubernetes.io/name: {{ include "ferrolb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels for a component. */}}
{{- define "ferrolb.selector" -}}
app.kubernetes.io/name: {{ include "ferrolb.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ferrolb.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Resource name prefix: fullnameOverride; else the release name when it already
says the chart's name (`helm install ferrolb` gives ferrolb-controller), else
"<release>-<name>". */}}
{{- define "ferrolb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "ferrolb.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ferrolb.monitoringNamespace" -}}
{{ default .Release.Namespace .Values.prometheus.namespace }}
{{- end -}}

{{/* The webhook's Service, configuration and certificate Secret names. */}}
{{- define "ferrolb.webhookService" -}}
{{- include "ferrolb.fullname" . }}-webhook
{{- end -}}
{{- define "ferrolb.webhookConfiguration" -}}
{{- include "ferrolb.fullname" . }}-validating-webhook
{{- end -}}
{{/* The Secret with the speakers' heartbeat key. */}}
{{- define "ferrolb.memberlistSecret" -}}
{{- .Values.speaker.memberlist.existingSecret | default (printf "%s-memberlist" (include "ferrolb.fullname" .)) }}
{{- end -}}

{{/* Whether the controller creates the heartbeat key's Secret (when it is missing). */}}
{{- define "ferrolb.controllerMakesMemberlistKey" -}}
{{- and .Values.speaker.memberlist.enabled (not .Values.speaker.memberlist.existingSecret) -}}
{{- end -}}

{{- define "ferrolb.webhookSecret" -}}
{{- .Values.webhook.certificateSecret | default (printf "%s-webhook-cert" (include "ferrolb.fullname" .)) }}
{{- end -}}

{{/* Whether the controller makes and renews the webhook certificate itself. */}}
{{- define "ferrolb.webhookManagesCert" -}}
{{- and .Values.webhook.manageCertificate (not .Values.webhook.certManager.enabled) -}}
{{- end -}}

{{/* The metrics endpoint's flags, shared by both components (values: metrics.*). */}}
{{- define "ferrolb.metricsArgs" -}}
- --metrics-secure={{ .Values.metrics.secure }}
{{- if eq .Values.metrics.bindAddress "podIP" }}
- --metrics-bind-address=$(POD_IP)
{{- end }}
{{- if and .Values.metrics.secure .Values.metrics.tlsSecret }}
- --metrics-tls-dir=/etc/ferrolb/metrics-tls
{{- end }}
{{- end }}

{{- define "ferrolb.metricsEnv" -}}
{{- if eq .Values.metrics.bindAddress "podIP" }}
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
{{- end }}
{{- end }}

{{/* The probes' scheme: the metrics port serves HTTPS when metrics.secure. */}}
{{- define "ferrolb.probeScheme" -}}
{{ if .Values.metrics.secure }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{- define "ferrolb.metricsTLSMount" -}}
{{- if and .Values.metrics.secure .Values.metrics.tlsSecret }}
- {name: metrics-tls, mountPath: /etc/ferrolb/metrics-tls, readOnly: true}
{{- end }}
{{- end }}

{{- define "ferrolb.metricsTLSVolume" -}}
{{- if and .Values.metrics.secure .Values.metrics.tlsSecret }}
- name: metrics-tls
  secret: {secretName: {{ .Values.metrics.tlsSecret }}}
{{- end }}
{{- end }}
