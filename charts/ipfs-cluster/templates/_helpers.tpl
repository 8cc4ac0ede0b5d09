{{/* The chart's name, or nameOverride. */}}
{{- define "ipfs-cluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The base name of every object: fullnameOverride, else <release>-<name> (the release name alone when
it already contains the name). 52 characters at most: the StatefulSet controller labels each pod with
the StatefulSet's name plus an 11-character revision hash, and a label value holds 63.
*/}}
{{- define "ipfs-cluster.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := include "ipfs-cluster.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "ipfs-cluster.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ipfs-cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the peers' objects: the StatefulSet, its pods, Services, PDB. */}}
{{- define "ipfs-cluster.peerLabels" -}}
{{ include "ipfs-cluster.labels" . }}
app.kubernetes.io/component: peer
{{ include "ipfs-cluster.clusterLabel" . }}
{{- end }}

{{/* Selector of the peer pods (fixed for the StatefulSet's life: a selector cannot change). */}}
{{- define "ipfs-cluster.peerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ipfs-cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: peer
{{- end }}

{{/* The label by which the operator finds a cluster's StatefulSet, and the peers find each other. */}}
{{- define "ipfs-cluster.clusterLabel" -}}
ipfscluster.io/cluster: {{ include "ipfs-cluster.fullname" . }}
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "ipfs-cluster.operatorLabels" -}}
{{ include "ipfs-cluster.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector of the operator pods. */}}
{{- define "ipfs-cluster.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ipfs-cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Name of the operator's Deployment, ServiceAccount, Role, RoleBinding and Lease. */}}
{{- define "ipfs-cluster.operatorName" -}}
{{- printf "%s-operator" (include "ipfs-cluster.fullname" .) }}
{{- end }}

{{/* The headless Service that gives the peers their stable network identity. */}}
{{- define "ipfs-cluster.peersServiceName" -}}
{{- printf "%s-peers" (include "ipfs-cluster.fullname" .) }}
{{- end }}

{{/* The Secret holding the cluster secret (key `secret`). */}}
{{- define "ipfs-cluster.clusterSecretName" -}}
{{- printf "%s-secret" (include "ipfs-cluster.fullname" .) }}
{{- end }}

{{/* The Secret holding the REST API credentials (key `credentials`): the user's, or the chart's. */}}
{{- define "ipfs-cluster.credentialsSecretName" -}}
{{- .Values.api.credentials.existingSecret | default (printf "%s-api-credentials" (include "ipfs-cluster.fullname" .)) }}
{{- end }}

{{/* An image reference from {repository, tag}; an empty tag is the chart's appVersion. */}}
{{- define "ipfs-cluster.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion) }}
{{- end }}

{{/*
How long a peer's preStop waits for the operator's verdict: the grace period less 10 seconds, so that
the sidecar still has time to stop cleanly after a verdict that came late.
*/}}
{{- define "ipfs-cluster.departureTimeout" -}}
{{- printf "%ds" (sub (int .Values.peers.terminationGracePeriodSeconds) 10) }}
{{- end }}

{{/* Container security settings shared by every container: no privileges of any kind. */}}
{{- define "ipfs-cluster.restrictedContainer" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end }}
