{{/* The name of the release's objects: <release>-promscale-operator, or just promscale-operator
     for a release named after it (`helm install promscale ...`), or the release name when it
     already says promscale-operator. */}}
{{- define "promscale-operator.fullname" -}}
{{- if hasPrefix .Release.Name .Chart.Name -}}
{{- .Chart.Name -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "promscale-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "promscale-operator.labels" -}}
{{ include "promscale-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: promscale
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "promscale-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "promscale-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "promscale-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "promscale-operator.connectorImage" -}}
{{- printf "%s:%s" .Values.connectorImage.repository (default .Chart.AppVersion .Values.connectorImage.tag) -}}
{{- end -}}

{{/* ClusterRole when watching every namespace, a Role in the watched namespace otherwise. */}}
{{- define "promscale-operator.rbacKind" -}}
{{- if .Values.watchNamespace -}}Role{{- else -}}ClusterRole{{- end -}}
{{- end -}}
