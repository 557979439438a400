{{/* Object names as the real chart makes them: a revision suffixes them. */}}
{{- define "istiod.name" -}}
istiod{{- if .Values.revision }}-{{ .Values.revision }}{{- end }}
{{- end }}

{{/* The real chart's webhook name: revision suffix, and the namespace outside istio-system. */}}
{{- define "istiod.injectorName" -}}
istio-sidecar-injector{{- if .Values.revision }}-{{ .Values.revision }}{{- end }}{{- if ne .Release.Namespace "istio-system" }}-{{ .Release.Namespace }}{{- end }}
{{- end }}

{{- define "istiod.labels" -}}
app: istiod
istio: pilot
istio.io/rev: {{ .Values.revision | default "default" | quote }}
release: {{ .Release.Name }}
teg-istio.test/stand-in: "true"
{{- end }}
