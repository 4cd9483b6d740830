{{/* The four tasks, in a fixed order. KServe model name == task name. */}}
{{- define "pe.tasks" -}}
colorize restore face-restore upscale
{{- end -}}

{{- define "pe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" -}}
{{- else if contains (include "pe.name" .) .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "pe.name" .) | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pe.labels" -}}
app.kubernetes.io/name: {{ include "pe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: photo-enhance
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "pe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* InferenceService name of a task's model: (dict "root" $ "task" "colorize"), the task's
default model; with "model" "span-x4" (not empty), another model of the task: <task>-<model>. */}}
{{- define "pe.isvcName" -}}
{{- if .model -}}
{{- printf "%s-%s-%s" (include "pe.fullname" .root) .task .model -}}
{{- else -}}
{{- printf "%s-%s" (include "pe.fullname" .root) .task -}}
{{- end -}}
{{- end -}}

{{/*
The models of a task (CONTRACT section 7), as a YAML list: its default (models.<task>.variant)
then each of models.<task>.others. name: the model (?model=...); model: "" for the default, else
the name (pe.isvcName); oip: its OIP v2 model name (<task>, or <task>-<name>); index: in others.
(dict "root" $ "task" "upscale")
*/}}
{{- define "pe.modelEntries" -}}
{{- $m := index .root.Values.models .task -}}
- {name: {{ $m.variant | quote }}, model: "", oip: {{ .task | quote }}, default: true, index: -1}
{{- range $i, $o := $m.others | default list }}
{{- if not (regexMatch "^[a-z0-9][a-z0-9-]{0,30}$" ($o.name | default "")) }}
{{- fail (printf "models.%s.others[%d].name %q: lower-case letters, digits and - (it names a Kubernetes object)" $.task $i ($o.name | default "")) }}
{{- end }}
{{- if eq $o.name $m.variant }}
{{- fail (printf "models.%s.others[%d]: %q is already the task's default model" $.task $i $o.name) }}
{{- end }}
- {name: {{ $o.name | quote }}, model: {{ $o.name | quote }}, oip: {{ printf "%s-%s" $.task $o.name | quote }}, default: false, index: {{ $i }}}
{{- end }}
{{- end -}}

{{/* The environment variable of a model's own predictor address: PREDICTOR_UPSCALE_SPAN_X4 */}}
{{- define "pe.modelAddressEnv" -}}
{{- printf "PREDICTOR_%s_%s" (.task | upper) (.model | upper) | replace "-" "_" | replace "." "_" -}}
{{- end -}}

{{/*
The predictor's in-cluster gRPC address (PREDICTOR_<TASK>):
- Standard with predictor.headlessService: dns:/// of this chart's headless Service
  "<isvc>-predictor-pods" (pe.headlessName), which resolves to every ready predictor pod; the
  gateway spreads its calls over them, on the predictor's own gRPC port.
- Standard without: KServe's Service "<isvc>-predictor"; its port 80 maps to the first container
  port (HTTP here) and every further container port keeps its own number, so gRPC is
  "<isvc>-predictor.<ns>.svc.<domain>:<grpcPort>".
- Knative: one container port (h2c), reached through Knative's "<isvc>-predictor" Service on 80.
*/}}
{{- define "pe.predictorAddress" -}}
{{- $root := .root -}}
{{- $p := $root.Values.predictor -}}
{{- $domain := printf "%s.svc.%s" $root.Release.Namespace $root.Values.clusterDomain -}}
{{- $host := printf "%s-predictor.%s" (include "pe.isvcName" .) $domain -}}
{{- if eq $p.deploymentMode "Knative" -}}
{{- printf "%s:80" $host -}}
{{- else if $p.headlessService -}}
{{- printf "dns:///%s.%s:%d" (include "pe.headlessName" .) $domain (int $p.grpcPort) -}}
{{- else -}}
{{- printf "%s:%d" $host (int $p.grpcPort) -}}
{{- end -}}
{{- end -}}

{{/* The headless Service of a task's predictor pods: (dict "root" $ "task" "colorize") */}}
{{- define "pe.headlessName" -}}
{{- printf "%s-predictor-pods" (include "pe.isvcName" .) -}}
{{- end -}}

{{/* MAX_INFLIGHT of the predictors (values.yaml, predictor.maxInflight) */}}
{{- define "pe.predictorMaxInflight" -}}
{{- $t := .Values.transformer -}}
{{- if not (kindIs "invalid" .Values.predictor.maxInflight) -}}
{{- .Values.predictor.maxInflight -}}
{{- else if or (gt (int $t.replicas) 1) $t.autoscaling.enabled -}}
{{- $t.maxInflightPerReplica -}}
{{- else -}}
0
{{- end -}}
{{- end -}}

{{- define "pe.predictorImage" -}}
{{- $img := .Values.predictor.image -}}
{{- $tag := $img.tag | default (printf "%s-%s" .Chart.AppVersion $img.flavor) -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}

{{- define "pe.transformerImage" -}}
{{- $img := .Values.transformer.image -}}
{{- printf "%s:%s" $img.repository ($img.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "pe.predictorServiceAccount" -}}
{{- if .Values.predictor.serviceAccount.create -}}
{{- default (printf "%s-predictor" (include "pe.fullname" .)) .Values.predictor.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.predictor.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pe.transformerServiceAccount" -}}
{{- if .Values.transformer.serviceAccount.create -}}
{{- default (printf "%s-transformer" (include "pe.fullname" .)) .Values.transformer.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.transformer.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pe.transformerSelectorLabels" -}}
{{ include "pe.selectorLabels" . }}
app.kubernetes.io/component: transformer
{{- end -}}

{{/* Names of the enabled tasks' InferenceServices, as a list for matchExpressions. */}}
{{- define "pe.enabledIsvcNames" -}}
{{- $root := . -}}
{{- range $task := splitList " " (include "pe.tasks" .) }}
{{- if (index $root.Values.models $task).enabled }}
{{- range $e := include "pe.modelEntries" (dict "root" $root "task" $task) | fromYamlArray }}
- {{ include "pe.isvcName" (dict "root" $root "task" $task "model" $e.model) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The gateway's public routes (CONTRACT section 1): "<pathType> <path>". Each route is served
bare and under /v1, and the web page (/ and its three files under /ui/), every path exact: nothing else of the gateway's (KServe's /v1/models/...,
/v2/...) is exposed. /metrics stays in the cluster.
*/}}
{{- define "pe.publicPaths" -}}
Exact /
Exact /ui/app.js
Exact /ui/style.css
Exact /ui/icon.svg
Exact /colorize
Exact /restore
Exact /face-restore
Exact /upscale
Exact /pipeline
Exact /v1/colorize
Exact /v1/restore
Exact /v1/face-restore
Exact /v1/upscale
Exact /v1/pipeline
Exact /v1/health
Exact /health
Exact /docs
Exact /redoc
Exact /openapi.json
{{- end -}}

{{/* Where the gateway keeps jobs (DATA_DIR): a volume, the root filesystem is read-only. */}}
{{- define "pe.dataDir" -}}
/var/lib/photo-enhance
{{- end }}

{{/* The job settings that cannot work together, refused with what to do instead. */}}
{{- define "pe.validateJobs" -}}
{{- $j := .Values.jobs -}}
{{- $t := .Values.transformer -}}
{{- if eq $j.store "embedded" }}
{{- if or (gt (int $t.replicas) 1) $t.autoscaling.enabled }}
{{- fail "jobs.store=embedded (SQLite on one volume) serves one gateway replica: set transformer.replicas=1 and transformer.autoscaling.enabled=false, or use jobs.store=redis (Redis/Valkey: jobs.redis.existingSecret) with jobs.results.existingClaim for several replicas" }}
{{- end }}
{{- else if eq $j.store "redis" }}
{{- if not $j.redis.existingSecret }}
{{- fail "jobs.store=redis needs jobs.redis.existingSecret: a Secret holding the redis:// URL of a Redis 6+ or Valkey you run (e.g. the official Valkey chart, valkey-io/valkey-helm)" }}
{{- end }}
{{- if not (or $j.results.existingClaim $j.results.s3.bucket) }}
{{- fail "jobs.store=redis needs where the replicas share uploads and results: jobs.results.existingClaim (a ReadWriteMany PVC) or jobs.results.s3.bucket (an S3-compatible bucket)" }}
{{- end }}
{{- end }}
{{- if and $j.results.existingClaim $j.results.s3.bucket }}
{{- fail "jobs.results: give existingClaim (a shared volume) or s3.bucket, not both" }}
{{- end }}
{{- if and $j.results.s3.presignedSeconds (not $j.results.s3.bucket) }}
{{- fail "jobs.results.s3.presignedSeconds needs jobs.results.s3.bucket" }}
{{- end }}
{{- if and $j.webhooks.enabled (not $j.webhooks.existingSecret) }}
{{- fail "jobs.webhooks.enabled needs jobs.webhooks.existingSecret (a Secret holding WEBHOOK_SECRET: whsec_ and the base64 of >= 24 random bytes)" }}
{{- end }}
{{- end }}

{{/* The port the gateway reaches the results bucket on: the endpoint's, else HTTPS. */}}
{{- define "pe.s3Port" -}}
{{- $endpoint := .Values.jobs.results.s3.endpoint -}}
{{- if not $endpoint -}}
443
{{- else -}}
{{- $url := urlParse $endpoint -}}
{{- $hostport := splitList ":" $url.host -}}
{{- if gt (len $hostport) 1 -}}
{{ last $hostport }}
{{- else -}}
{{ ternary "80" "443" (eq $url.scheme "http") }}
{{- end -}}
{{- end -}}
{{- end }}
