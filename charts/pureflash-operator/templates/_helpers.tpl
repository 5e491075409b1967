{{/* The chart name, truncated to the 63 characters a label value allows. */}}
{{- define "pureflash-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: object names derive from it. */}}
{{- define "pureflash-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "pureflash-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pureflash-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimAll "-_." | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: pureflash
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's Pods (stable across upgrades). */}}
{{- define "pureflash-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pureflash-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pureflash-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pureflash-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pureflash-operator.leaseName" -}}
{{- default (include "pureflash-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
ZooKeeper as pfs Pods reach it: zookeeper.connectFromPods, else zookeeper.connect with each
bare Service name qualified by the release's namespace. pfs Pods run in the stores'
namespaces, where `zookeeper:2181` would name another (or no) Service. pfs's client knows no
`tcp://` prefix (the operator's does): it is dropped. The chroot follows the last server.
*/}}
{{- define "pureflash-operator.pfsZookeeper" -}}
{{- if .Values.zookeeper.connectFromPods }}
{{- replace "tcp://" "" .Values.zookeeper.connectFromPods }}
{{- else }}
{{- $namespace := .Release.Namespace }}
{{- $connect := replace "tcp://" "" .Values.zookeeper.connect }}
{{- $chroot := "" }}
{{- if contains "/" $connect }}
{{- $parts := splitn "/" 2 $connect }}
{{- $connect = $parts._0 }}
{{- $chroot = printf "/%s" $parts._1 }}
{{- end }}
{{- $servers := list }}
{{- range (splitList "," $connect) }}
{{- $server := trim . }}
{{- $host := first (splitList ":" $server) }}
{{- if or (contains "." $host) (contains "[" $host) (eq $host "localhost") (eq $host "") }}
{{- $servers = append $servers $server }}
{{- else }}
{{- $servers = append $servers (printf "%s.%s.svc%s" $host $namespace (trimPrefix $host $server)) }}
{{- end }}
{{- end }}
{{- printf "%s%s" (join "," $servers) $chroot }}
{{- end }}
{{- end }}

{{/*
A count as the operator reads it: a values file's whole numbers arrive as floats, which print
as 1e+06; they are printed as integers. Anything else is passed on as it is, for the operator
to refuse with a clear message (the schema refuses it first).
*/}}
{{- define "pureflash-operator.count" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/*
A duration as given, after the checks the schema's patterns cannot make: its limits in the
operator, which refuses a value outside them at start (a crash loop). Called with a list:
the value's name, the value, the upper limit in seconds and how it reads, and optionally a
lower limit in seconds and how it reads. The duration is summed the way the operator reads
it (humantime units, fractions allowed, several terms added up).
*/}}
{{- define "pureflash-operator.duration" -}}
{{- $name := index . 0 }}
{{- $text := index . 1 }}
{{- $limit := index . 2 }}
{{- $unitSeconds := dict "ns" 1e-9 "us" 1e-6 "µs" 1e-6 "ms" 1e-3 "s" 1.0 "m" 60.0 "min" 60.0 "h" 3600.0 "d" 86400.0 }}
{{- /* How many of the unit the operator counts a fraction in exactly: seconds for h and d,
nanoseconds for the others; none for ns. */}}
{{- $exactIn := dict "ns" 0 "us" 1000 "µs" 1000 "ms" 1000000 "s" 1000000000 "m" 60000000000 "min" 60000000000 "h" 3600 "d" 86400 }}
{{- $seconds := 0.0 }}
{{- range regexFindAll `[0-9]+(\.[0-9]+)?(ns|us|µs|ms|min|s|m|h|d)` $text -1 }}
{{- $number := regexFind `^[0-9]+(\.[0-9]+)?` . }}
{{- $unit := trimPrefix $number . }}
{{- $seconds = addf $seconds (mulf (float64 $number) (get $unitSeconds $unit)) }}
{{- $digits := regexReplaceAll `^[0-9]+\.?` $number "" }}
{{- $significant := regexReplaceAll `0+$` $digits "" }}
{{- if $digits }}
{{- $exact := int64 (get $exactIn $unit) }}
{{- $scale := 1 }}
{{- range until (len $significant) }}{{ $scale = mul $scale 10 }}{{ end }}
{{- /* The operator multiplies the fraction's digits by the unit in 64 bits, then divides. */}}
{{- if or (eq $exact 0) (gt (len $significant) 9) (gt (mulf (float64 $digits) (float64 $exact)) 1.8e19) (ne (mod (mul (mod $exact $scale) (atoi $significant)) $scale) 0) }}
{{- fail (printf "%s %q: the operator takes a fraction that comes to whole seconds for h and d (0.5h), to whole nanoseconds for the other units (1.5s), and none for ns" $name $text) }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt $seconds (float64 $limit) }}
{{- fail (printf "%s %q is over %s, the longest the operator accepts" $name $text (index . 3)) }}
{{- end }}
{{- if and (gt (len .) 4) (lt $seconds (float64 (index . 4))) }}
{{- fail (printf "%s %q is under %s, the shortest the operator accepts" $name $text (index . 5)) }}
{{- end }}
{{- $text }}
{{- end }}

{{/* Any period or timeout: at most 365 days. */}}
{{- define "pureflash-operator.period" -}}
{{- include "pureflash-operator.duration" (list (index . 0) (index . 1) 31536000 "365d") }}
{{- end }}

{{- define "pureflash-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}

{{/*
What the operator does with PureFlashStores, their pfs Pods and ConfigMaps, and Events — the
exact calls of the code: list/watch the stores and patch their status; get/list/watch, create
and patch (adopting one found without an owner), delete (the force restart) and evict (a
rollout's replacement of a serving one) pfs Pods; list/watch, create and
patch their ConfigMaps; create and patch (series) events.k8s.io Events. Update of the stores'
finalizers, and delete on ConfigMaps, are what setting owner references (with
`blockOwnerDeletion`) on the Pods and ConfigMaps needs where the
OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift, hardened clusters); the
operator itself never writes finalizers or deletes a ConfigMap.
*/}}
{{- define "pureflash-operator.storeRules" -}}
- apiGroups: ["pureflash.io"]
  resources: ["pureflashstores"]
  verbs: ["list", "watch"]
- apiGroups: ["pureflash.io"]
  resources: ["pureflashstores/status"]
  verbs: ["patch"]
- apiGroups: ["pureflash.io"]
  resources: ["pureflashstores/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The pfs Pods' readiness gate (pureflash.io/serving).
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
# A rollout replaces a serving pfs by evicting its Pod, within the disruption budgets.
- apiGroups: [""]
  resources: ["pods/eviction"]
  verbs: ["create"]
# One budget per namespace with stores (--disruption-budget).
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
