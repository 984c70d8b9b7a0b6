{{/* vim: set filetype=mustache: */}}

{{- define "pixelfarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name, truncated so that "<fullname>-worker-<pool>"
still fits the 63 character limit for the common pool names.
*/}}
{{- define "pixelfarm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pixelfarm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pixelfarm.labels" -}}
helm.sh/chart: {{ include "pixelfarm.chart" . }}
{{ include "pixelfarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pixelfarm
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "pixelfarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pixelfarm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pixelfarm.schedulerName" -}}
{{- printf "%s-scheduler" (include "pixelfarm.fullname" .) -}}
{{- end -}}

{{- define "pixelfarm.poolName" -}}
{{- printf "%s-worker-%s" (include "pixelfarm.fullname" .root) .pool.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pixelfarm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pixelfarm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pixelfarm.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- printf "%s-secrets" (include "pixelfarm.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "pixelfarm.image" -}}
{{- $img := .image -}}
{{- $tag := default .root.Chart.AppVersion $img.tag -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
Environment shared by every pixelfarm container: config layer selection and
secrets from the Secret. Call with (dict "root" $ "secretName" NAME).
*/}}
{{- define "pixelfarm.commonEnv" -}}
{{- $keys := .root.Values.secrets.keys -}}
- name: PIXELFARM_ENV
  value: {{ .root.Values.configEnv | quote }}
- name: PIXELFARM_CONFIG_DIR
  value: /app/config
- name: PIXELFARM__DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $keys.databaseUrl }}
- name: PIXELFARM__BROKER__URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $keys.brokerUrl }}
- name: PIXELFARM__BLOB__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $keys.s3AccessKeyId }}
      optional: true
- name: PIXELFARM__BLOB__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $keys.s3SecretAccessKey }}
      optional: true
{{- end -}}

{{/*
A worker pool with workerDefaults applied. Top-level keys of the pool replace
the default wholesale (so a pool's `resources` or `tolerations` is exactly what
it says), except the small maps autoscaling, podDisruptionBudget and
modelCache, which are merged key by key. Explicit zero/false values win (no
mergeOverwrite, which would drop them). Returns YAML; use with fromYaml.
*/}}
{{- define "pixelfarm.pool" -}}
{{- $d := deepCopy .root.Values.workerDefaults -}}
{{- range $k, $v := .pool -}}
{{- if and (kindIs "map" $v) (has $k (list "autoscaling" "podDisruptionBudget" "modelCache")) -}}
{{- $m := deepCopy (get $d $k | default dict) -}}
{{- range $kk, $vv := $v -}}
{{- $_ := set $m $kk $vv -}}
{{- end -}}
{{- $_ := set $d $k $m -}}
{{- else -}}
{{- $_ := set $d $k $v -}}
{{- end -}}
{{- end -}}
{{- toYaml $d -}}
{{- end -}}

{{/* Regex alternation of a pool's model names, for PromQL. */}}
{{- define "pixelfarm.modelRegex" -}}
{{- join "|" . -}}
{{- end -}}

{{/* Where workers find their model registry file (worker.registry). */}}
{{- define "pixelfarm.registryPath" -}}
/app/models/registry.yaml
{{- end -}}

{{/*
The model registry a pool's workers read: modelRegistry, with the pool's
modelRegistry (if any) laid over it key by key (its `models` are merged by
name), then restricted to the models the pool serves -- a worker downloads
every s3:// model of its registry at start, so a pool must not carry the
others. Call with (dict "root" $ "pool" POOL); returns YAML.
*/}}
{{- define "pixelfarm.poolRegistry" -}}
{{- $reg := deepCopy (omit (.root.Values.modelRegistry | default dict) "models") -}}
{{- $models := deepCopy (.root.Values.modelRegistry.models | default dict) -}}
{{- with .pool.modelRegistry -}}
{{- range $k, $v := . -}}
{{- if ne $k "models" -}}
{{- $_ := set $reg $k $v -}}
{{- end -}}
{{- end -}}
{{- range $m, $e := (.models | default dict) -}}
{{- $_ := set $models $m $e -}}
{{- end -}}
{{- end -}}
{{- $sel := dict -}}
{{- range $m := .pool.models -}}
{{- if hasKey $models (toString $m) -}}
{{- $_ := set $sel (toString $m) (get $models (toString $m)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $reg "models" $sel -}}
{{- toYaml $reg -}}
{{- end -}}

{{/*
Where the scheduler's TLS Secret is mounted (scheduler.tls).
*/}}
{{- define "pixelfarm.tlsDir" -}}
/etc/pixelfarm/tls
{{- end }}

{{/*
A probe of the scheduler: scheme HTTPS when its ports serve TLS.
*/}}
{{- define "pixelfarm.schedulerProbe" -}}
{{- $probe := deepCopy .probe }}
{{- if and .root.Values.scheduler.tls.enabled $probe.httpGet }}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- toYaml $probe }}
{{- end }}
