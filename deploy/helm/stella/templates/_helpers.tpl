{{/*
Names, labels, the image reference and the checks every template shares.
Component templates are called with a context dict:
  root: the chart's top-level context, key: the values key (taskRunner),
  meta: the component's entry of "stella.components" (image, port, aggregationOnly),
  c: the component's values.
*/}}

{{- define "stella.fullname" -}}
{{- if contains "stella" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-stella" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stella.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: stella
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stellaops
{{- end -}}

{{/* The component's short name: api, task-runner, postgres. */}}
{{- define "stella.component" -}}
{{- trimPrefix "stella-" .meta.image -}}
{{- end -}}

{{- define "stella.componentName" -}}
{{- printf "%s-%s" (include "stella.fullname" .root) (include "stella.component" .) -}}
{{- end -}}

{{- define "stella.selectorLabels" -}}
app.kubernetes.io/name: stella
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ include "stella.component" . }}
{{- end -}}

{{- define "stella.componentLabels" -}}
{{ include "stella.labels" .root }}
app.kubernetes.io/component: {{ include "stella.component" . }}
{{- end -}}

{{/*
registry/prefix/repository:tag@digest. Refuses a missing or malformed digest and a repository
that carries its own tag or digest: a StellaOps image is never referenced by a tag alone.
Called with (dict "root" $ "image" <image values> "path" "api.image").
*/}}
{{- define "stella.image" -}}
{{- $g := .root.Values.global -}}
{{- $i := .image -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" (toString $i.digest)) -}}
{{- fail (printf "%s.digest %q is not a sha256 digest: every StellaOps image is pinned by digest; use the one `cargo xtask deploy` wrote into values.yaml, or copy it from images.json" .path (toString $i.digest)) -}}
{{- end -}}
{{- if or (contains ":" (toString $i.repository)) (contains "@" (toString $i.repository)) -}}
{{- fail (printf "%s.repository %q carries a tag or digest: set %s.tag and %s.digest instead" .path $i.repository .path .path) -}}
{{- end -}}
{{- $prefix := "" -}}
{{- if $g.imageRepositoryPrefix -}}{{- $prefix = printf "%s/" $g.imageRepositoryPrefix -}}{{- end -}}
{{- printf "%s/%s%s:%s@%s" $g.imageRegistry $prefix $i.repository $i.tag $i.digest -}}
{{- end -}}

{{/*
Pod and container security contexts: the same for every pod this chart creates. With
global.podSecurity.assignedUid the platform chooses the uid (OpenShift: one of the namespace's
range, in group 0), so none is set here; everything else stays.
*/}}
{{- define "stella.podSecurityContext" -}}
runAsNonRoot: true
{{- if not .Values.global.podSecurity.assignedUid }}
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "stella.containerSecurityContext" -}}
runAsNonRoot: true
{{- if not .Values.global.podSecurity.assignedUid }}
runAsUser: 65532
runAsGroup: 65532
{{- end }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The site's additions to a StellaOps container and pod (the components and the migrator), called
with the context dict (root, c): global.* first, then the component's own, and the CA bundle.
*/}}
{{- define "stella.extraEnv" -}}
{{- $g := .root.Values.global -}}
{{- if or $g.caBundle.configMap $g.caBundle.secret }}
# The site's CAs, beside the images' Mozilla roots (SSL_CERT_FILE): read by rustls-native-certs.
- name: SSL_CERT_DIR
  value: /etc/ssl/site-ca
{{- end }}
{{- with concat $g.extraEnv .c.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "stella.extraVolumeMounts" -}}
{{- $g := .root.Values.global -}}
{{- if or $g.caBundle.configMap $g.caBundle.secret }}
- name: site-ca
  mountPath: /etc/ssl/site-ca
  readOnly: true
{{- end }}
{{- with concat $g.extraVolumeMounts .c.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "stella.extraVolumes" -}}
{{- $g := .root.Values.global -}}
{{- $items := list (dict "key" $g.caBundle.key "path" "site-ca.crt") -}}
{{- if $g.caBundle.configMap }}
- name: site-ca
  configMap:
    name: {{ $g.caBundle.configMap }}
    items: {{ toJson $items }}
{{- else if $g.caBundle.secret }}
- name: site-ca
  secret:
    secretName: {{ $g.caBundle.secret }}
    items: {{ toJson $items }}
{{- end }}
{{- with concat $g.extraVolumes .c.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The priority class: the component's own (when it has one), else the global one. */}}
{{- define "stella.priorityClassName" -}}
{{- $name := .root.Values.global.priorityClassName -}}
{{- if and .c (hasKey .c "priorityClassName") .c.priorityClassName -}}{{- $name = .c.priorityClassName -}}{{- end -}}
{{- with $name }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/*
A component's affinity and topology spread: its own affinity merged over the default
anti-affinity (global.podAntiAffinity: soft, each key given by the component replacing the
default's), and its own spread constraints or else global.topologySpreadConstraints, each with
the component's pod selector.
*/}}
{{- define "stella.scheduling" -}}
{{- $g := .root.Values.global -}}
{{- $selector := include "stella.selectorLabels" . | fromYaml -}}
{{- $affinity := deepCopy .c.affinity -}}
{{- if and (eq $g.podAntiAffinity "soft") (not (hasKey $affinity "podAntiAffinity")) -}}
{{- $term := dict "weight" 100 "podAffinityTerm" (dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" $selector)) -}}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list $term)) -}}
{{- end -}}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.topologySpreadConstraints | default $g.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  - {{- toYaml (merge (dict "labelSelector" (dict "matchLabels" $selector)) .) | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The Secret of the bundled mode: given, or the one the chart creates. */}}
{{- define "stella.bundledSecret" -}}
{{- .Values.bundled.existingSecret | default (printf "%s-bundled" (include "stella.fullname" .)) -}}
{{- end -}}

{{/*
Where a dependency's URL is: (secret name, key) as "name/key", for database, redis and queue.
External mode: the existing Secrets of the values; bundled mode: the bundled Secret.
*/}}
{{- define "stella.secretRef" -}}
{{- $root := index . 0 -}}{{- $dep := index . 1 -}}
{{- if eq $root.Values.mode "bundled" -}}
{{- printf "%s/%s-url" (include "stella.bundledSecret" $root) $dep -}}
{{- else -}}
{{- $v := index $root.Values $dep -}}
{{- printf "%s/%s" (required (printf "%s.existingSecret is required in mode external" $dep) $v.existingSecret) $v.secretKey -}}
{{- end -}}
{{- end -}}

{{/* The non-secret settings of a component: its ConfigMap's data. */}}
{{- define "stella.config" -}}
{{- $root := .root -}}
STELLA_LOG_LEVEL: {{ $root.Values.logLevel | quote }}
STELLA_LOG_FORMAT: "json"
STELLA_QUICKSTART_MODE: "false"
STELLA_DATABASE_POOL_SIZE: {{ $root.Values.database.poolSize | quote }}
{{- if eq $root.Values.mode "bundled" }}
STELLA_OBJECT_STORE_URL: "file:///var/lib/stella/objects"
{{- else }}
STELLA_OBJECT_STORE_URL: {{ $root.Values.objectStore.url | quote }}
STELLA_OBJECT_STORE_REGION: {{ $root.Values.objectStore.region | quote }}
{{- with $root.Values.objectStore.endpoint }}
STELLA_OBJECT_STORE_ENDPOINT: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $root.Values.otel.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- with $root.Values.otel.resourceAttributes }}
OTEL_RESOURCE_ATTRIBUTES: {{ . | quote }}
{{- end }}
{{- if eq .key "console" }}
STELLA_CONSOLE_SERVICE_URL: {{ printf "http://%s-{service}:{port}" (include "stella.fullname" $root) | quote }}
STELLA_CONSOLE_CLI_IMAGE: {{ include "stella.image" (dict "root" $root "image" $root.Values.cli.image "path" "cli.image") | quote }}
{{- if $root.Values.ingress.enabled }}
STELLA_CONSOLE_API_URL: {{ printf "%s://%s" (ternary "https" "http" $root.Values.ingress.tls.enabled) $root.Values.ingress.api.host | quote }}
{{- end }}
{{- end }}
{{- range $k, $v := .c.config }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/*
The version-skew policy (docs/install/helm-prod.md): every component and the migrator run a
release tag with the chart's appVersion major.minor; patch versions may differ.
*/}}
{{- define "stella.checkVersions" -}}
{{- if .Values.versionSkew.enforce -}}
{{- $app := semver .Chart.AppVersion -}}
{{- $images := dict "migrator" .Values.migrator.image -}}
{{- range $key, $_ := include "stella.components" . | fromJson -}}
{{- $c := index $.Values $key -}}
{{- if $c.enabled -}}{{- $_ := set $images $key $c.image -}}{{- end -}}
{{- end -}}
{{- range $key, $image := $images -}}
{{- $tag := toString $image.tag -}}
{{- if not (regexMatch "^v?[0-9]+\\.[0-9]+\\.[0-9]+(-[0-9A-Za-z.-]+)?$" $tag) -}}
{{- fail (printf "%s.image.tag %q is not a release version: the version-skew policy compares release tags (vX.Y.Z); set versionSkew.enforce=false to deploy edge or nightly builds" $key $tag) -}}
{{- end -}}
{{- $v := semver $tag -}}
{{- if or (ne $v.Major $app.Major) (ne $v.Minor $app.Minor) -}}
{{- fail (printf "%s.image.tag %s is outside the version-skew policy: every component must run %d.%d.x, the chart's appVersion %s; upgrade the components with the chart" $key $tag $app.Major $app.Minor $.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
