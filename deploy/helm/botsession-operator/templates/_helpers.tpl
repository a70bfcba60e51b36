{{- define "bs.name" -}}botsession-operator{{- end -}}

{{- define "bs.fullname" -}}
{{- if contains "botsession" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-botsession" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "bs.namespace" -}}{{ default .Release.Namespace .Values.watchNamespace }}{{- end -}}

{{- define "bs.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "bs.labels" -}}
app.kubernetes.io/name: {{ include "bs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bs.selector" -}}
app.kubernetes.io/name: {{ include "bs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bs.sqlite" -}}{{ hasPrefix "sqlite" .Values.database.url }}{{- end -}}

{{/* env shared by every container: settings from the ConfigMap, URLs and tokens from Secrets */}}
{{- define "bs.env" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: BOTSESSION_NAMESPACE
  value: {{ include "bs.namespace" . | quote }}
- name: BOTSESSION_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-stores" (include "bs.fullname" .)) .Values.redis.existingSecret }}
      key: {{ if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end }}
- name: BOTSESSION_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-stores" (include "bs.fullname" .)) .Values.database.existingSecret }}
      key: {{ if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}database-url{{ end }}
- name: BOTSESSION_FINGERPRINT_KEY
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-fingerprint" (include "bs.fullname" .)) .Values.logging.fingerprintKey.existingSecret }}
      key: {{ if .Values.logging.fingerprintKey.existingSecret }}{{ .Values.logging.fingerprintKey.existingSecretKey }}{{ else }}fingerprint-key{{ end }}
{{- end -}}

{{- define "bs.operatorServiceAccount" -}}
{{ default (printf "%s-operator" (include "bs.fullname" .)) .Values.serviceAccount.operatorName }}
{{- end -}}

{{- define "bs.apiServiceAccount" -}}
{{ default (printf "%s-api" (include "bs.fullname" .)) .Values.serviceAccount.apiName }}
{{- end -}}

{{- define "bs.apiContainer" -}}
- name: api
  image: {{ include "bs.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["api", "--host", "0.0.0.0", "--port", "{{ .Values.api.port }}"]
  envFrom:
    - configMapRef: {name: {{ include "bs.fullname" . }}-settings}
  env:
    {{- include "bs.env" . | nindent 4 }}
    - name: BOTSESSION_API_TOKENS_FILE
      value: /etc/botsession/tokens/{{ if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}tokens.json{{ end }}
  ports:
    - {name: http, containerPort: {{ .Values.api.port }}}
  readinessProbe:
    httpGet: {path: /readyz, port: http}
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /healthz, port: http}
    periodSeconds: 10
  resources: {{- toYaml .Values.api.resources | nindent 4 }}
  securityContext: {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: tokens, mountPath: /etc/botsession/tokens, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* "90s", "15m", "3h", "7d" -> seconds */}}
{{- define "bs.seconds" -}}
{{- $v := toString . -}}
{{- $n := regexFind "^[0-9]+" $v | int -}}
{{- $u := trimPrefix (toString $n) $v -}}
{{- if eq $u "d" }}{{ mul $n 86400 }}{{ else if eq $u "h" }}{{ mul $n 3600 }}{{ else if eq $u "m" }}{{ mul $n 60 }}{{ else }}{{ $n }}{{ end -}}
{{- end -}}
