{{/* The real chart's object name: resourceName, else ztunnel. */}}
{{- define "ztunnel.release-name" -}}
{{ .Values.resourceName | default "ztunnel" }}
{{- end }}
