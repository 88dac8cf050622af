{{/* Names and labels shared by every template. */}}

{{- define "medusa-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "medusa-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "medusa-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "medusa-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "medusa-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "medusa-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: medusa-operator
{{- end -}}

{{- define "medusa-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "medusa-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "medusa-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "medusa-operator.leaseName" -}}
{{- default (include "medusa-operator.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "medusa-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.leaseNamespace -}}
{{- end -}}

{{/*
The operator's command line: `medusa-operator run` with the watch scope, ports, leader election,
default images and log format.
*/}}
{{- define "medusa-operator.args" -}}
- run
{{- if eq .Values.watchMode "cluster" }}
- --all-namespaces
{{- else }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- end }}
- --metrics-port={{ .Values.operator.metricsPort }}
- --health-port={{ .Values.operator.healthPort }}
{{- if .Values.leaderElection.enabled }}
- --leader-elect
- --lease-name={{ include "medusa-operator.leaseName" . }}
- --lease-namespace={{ include "medusa-operator.leaseNamespace" . }}
{{- else }}
- --no-leader-elect
{{- end }}
{{- with .Values.operator.builderImage }}
- --builder-image={{ . }}
{{- end }}
{{- with .Values.operator.servingImage }}
- --serving-image={{ . }}
{{- end }}
{{- with .Values.operator.referenceBuilderImage }}
- --reference-builder-image={{ . }}
{{- end }}
{{- with .Values.operator.referenceServingImage }}
- --reference-serving-image={{ . }}
{{- end }}
{{- with .Values.operator.referenceImage }}
- --reference-image={{ . }}
{{- end }}
{{- with .Values.operator.jobs.nodeSelector }}
- --job-node-selector={{ toJson . }}
{{- end }}
{{- with .Values.operator.jobs.tolerations }}
- --job-tolerations={{ toJson . }}
{{- end }}
{{- range .Values.imagePolicy.allowedImages }}
- --allowed-image={{ . }}
{{- end }}
- --log-format={{ .Values.operator.logFormat }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Settings the schema cannot check on its own; each failure says what to change. */}}
{{- define "medusa-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "replicaCount above 1 needs leaderElection.enabled=true: without it every replica reconciles the same MedusaModels; set replicaCount=1 or enable leader election" -}}
{{- end -}}
{{- if and (eq .Values.watchMode "namespaced") (empty .Values.watchNamespaces) -}}
{{- fail "watchMode=namespaced needs at least one namespace in watchNamespaces, e.g. --set watchNamespaces={models}; or use watchMode=cluster" -}}
{{- end -}}
{{- if and (eq .Values.watchMode "cluster") (not (empty .Values.watchNamespaces)) -}}
{{- fail "watchNamespaces is set but watchMode is cluster, which watches every namespace; set watchMode=namespaced to watch only those namespaces" -}}
{{- end -}}
{{- if eq (int .Values.operator.metricsPort) (int .Values.operator.healthPort) -}}
{{- fail "operator.metricsPort and operator.healthPort must differ" -}}
{{- end -}}
{{- end -}}
