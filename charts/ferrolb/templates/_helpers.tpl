{{/* Common labels. */}}
{{- define "ferrolb.labels" -}}
app.kubernetes.io/name: ferrolb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels for a component. */}}
{{- define "ferrolb.selector" -}}
app.kubernetes.io/name: ferrolb
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ferrolb.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* Resource name prefix: the release name when it already says ferrolb
(`helm install ferrolb` gives ferrolb-controller), else "<release>-ferrolb". */}}
{{- define "ferrolb.fullname" -}}
{{- if contains "ferrolb" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-ferrolb" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferrolb.monitoringNamespace" -}}
{{ default .Release.Namespace .Values.prometheus.namespace }}
{{- end -}}
