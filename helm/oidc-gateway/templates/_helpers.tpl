{{/*
Helpers take a scope dict: (dict "v" <the oidc-gateway values> "release" .Release "appVersion" <chart appVersion>).
The chart's own templates build it with "oidc-gateway.scope"; an app chart that has this chart as a
dependency uses the public sidecar helpers at the bottom with its own root context.
*/}}

{{- define "oidc-gateway.scope" -}}
{{- toJson (dict "v" .Values "release" .Release "appVersion" .Chart.AppVersion) -}}
{{- end }}

{{- define "oidc-gateway.name" -}}
{{- default "oidc-gateway" .v.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "oidc-gateway.fullname" -}}
{{- if .v.fullnameOverride -}}
{{- .v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "oidc-gateway.name" . -}}
{{- if contains $name .release.Name -}}
{{- .release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "oidc-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oidc-gateway.name" . }}
app.kubernetes.io/instance: {{ .release.Name }}
{{- end }}

{{- define "oidc-gateway.labels" -}}
{{ include "oidc-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .appVersion | quote }}
app.kubernetes.io/component: auth-gateway
app.kubernetes.io/managed-by: {{ .release.Service }}
{{- end }}

{{- define "oidc-gateway.secretName" -}}
{{- .v.secrets.existingSecret | default (include "oidc-gateway.fullname" .) -}}
{{- end }}

{{/* "true" when the client authenticates with a secret (not a public client). */}}
{{- define "oidc-gateway.hasClientSecret" -}}
{{- if ne (dig "oidc" "token_endpoint_auth_method" "client_secret_basic" .v.config) "none" -}}true{{- end -}}
{{- end }}

{{- define "oidc-gateway.hasRedisPassword" -}}
{{- if or .v.secrets.redisPassword (and .v.secrets.existingSecret .v.secrets.redisPasswordKey) -}}true{{- end -}}
{{- end }}

{{- define "oidc-gateway.redisPasswordKey" -}}
{{- .v.secrets.redisPasswordKey | default "redis-password" -}}
{{- end }}

{{/* config.yaml: the values' config plus listen and the *_file keys of the mounted secrets. */}}
{{- define "oidc-gateway.configYaml" -}}
{{- $config := deepCopy .v.config -}}
{{- $_ := set $config "listen" (printf "0.0.0.0:%d" (int .v.port)) -}}
{{- $oidc := deepCopy (default (dict) $config.oidc) -}}
{{- if include "oidc-gateway.hasClientSecret" . -}}
{{- $_ := set $oidc "client_secret_file" "secrets/client_secret" -}}
{{- end -}}
{{- $_ := set $config "oidc" $oidc -}}
{{- $session := deepCopy (default (dict) $config.session) -}}
{{- $_ := set $session "cookie_secret_file" "secrets/cookie_secret" -}}
{{- if include "oidc-gateway.hasRedisPassword" . -}}
{{- $_ := set $session "redis_password_file" "secrets/redis_password" -}}
{{- end -}}
{{- $_ := set $config "session" $session -}}
{{- if not $config.upstreams -}}
{{- if eq .v.mode "sidecar" -}}
{{- $_ := set $config "upstreams" (list (dict "path" "/" "url" (printf "http://127.0.0.1:%d" (int .v.sidecar.appPort)))) -}}
{{- else -}}
{{- fail "config.upstreams: list at least one upstream (path, url) in standalone mode" -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end }}

{{/* The pod volumes: config.yaml and the secrets as files in one read-only directory, and a /tmp. */}}
{{- define "oidc-gateway.volumes" -}}
- name: oidc-gateway-config
  projected:
    defaultMode: 0440
    sources:
      - configMap:
          name: {{ include "oidc-gateway.fullname" . }}
          items:
            - {key: config.yaml, path: config.yaml}
      - secret:
          name: {{ include "oidc-gateway.secretName" . }}
          items:
            {{- if include "oidc-gateway.hasClientSecret" . }}
            - {key: {{ .v.secrets.clientSecretKey }}, path: secrets/client_secret}
            {{- end }}
            - {key: {{ .v.secrets.cookieSecretKey }}, path: secrets/cookie_secret}
            {{- if include "oidc-gateway.hasRedisPassword" . }}
            - {key: {{ include "oidc-gateway.redisPasswordKey" . }}, path: secrets/redis_password}
            {{- end }}
- name: oidc-gateway-tmp
  emptyDir: {medium: Memory, sizeLimit: 16Mi}
{{- end }}

{{/* The gateway container, the same in standalone and sidecar mode. */}}
{{- define "oidc-gateway.container" -}}
- name: oidc-gateway
  image: {{ printf "%s:%s" .v.image.repository (.v.image.tag | default .appVersion) | quote }}
  imagePullPolicy: {{ .v.image.pullPolicy }}
  args: [run, --config, /etc/oidc-gateway/config.yaml]
  ports:
    - {name: http, containerPort: {{ int .v.port }}, protocol: TCP}
  {{- with .v.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .v.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .v.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .v.preStopSleepSeconds }}
  lifecycle:
    preStop:
      exec:
        command: [sleep, {{ .v.preStopSleepSeconds | quote }}]
  {{- end }}
  securityContext:
    {{- toYaml .v.securityContext | nindent 4 }}
  {{- with .v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - {name: oidc-gateway-config, mountPath: /etc/oidc-gateway, readOnly: true}
    - {name: oidc-gateway-tmp, mountPath: /tmp}
{{- end }}

{{- define "oidc-gateway.configChecksum" -}}
{{- include "oidc-gateway.configYaml" . | sha256sum -}}
{{- end }}

{{/*
Public sidecar helpers, for an app chart that lists this chart as a dependency named oidc-gateway
(values under `oidc-gateway:` with mode: sidecar). In the app's pod template:

  annotations:
    {{- include "oidc-gateway.sidecar.annotations" . | nindent 8 }}
  containers:
    {{- include "oidc-gateway.sidecar.container" . | nindent 8 }}
    - name: app ...                      # listening on oidc-gateway.sidecar.appPort
  volumes:
    {{- include "oidc-gateway.sidecar.volumes" . | nindent 8 }}

and set the pod's securityContext (runAsNonRoot etc.) as your app needs.
*/}}
{{- define "oidc-gateway.sidecar.scope" -}}
{{- $v := index .Values "oidc-gateway" | required "oidc-gateway.sidecar.*: the app chart needs the oidc-gateway dependency (values under oidc-gateway:)" -}}
{{- $sub := index (index . "Subcharts" | default dict) "oidc-gateway" -}}
{{- $appVersion := "" -}}
{{- if $sub -}}{{- $appVersion = $sub.Chart.AppVersion -}}{{- end -}}
{{- if and (not $v.image.tag) (not $appVersion) -}}
{{- fail "oidc-gateway.image.tag: set the gateway image tag (this Helm version does not expose the subchart's appVersion)" -}}
{{- end -}}
{{- toJson (dict "v" $v "release" .Release "appVersion" $appVersion) -}}
{{- end }}

{{- define "oidc-gateway.sidecar.container" -}}
{{- include "oidc-gateway.container" (include "oidc-gateway.sidecar.scope" . | fromJson) -}}
{{- end }}

{{- define "oidc-gateway.sidecar.volumes" -}}
{{- include "oidc-gateway.volumes" (include "oidc-gateway.sidecar.scope" . | fromJson) -}}
{{- end }}

{{- define "oidc-gateway.sidecar.annotations" -}}
checksum/oidc-gateway-config: {{ include "oidc-gateway.configChecksum" (include "oidc-gateway.sidecar.scope" . | fromJson) }}
{{- end }}
