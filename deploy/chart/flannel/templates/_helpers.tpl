{{/* Namespace of every namespaced object. */}}
{{- define "flannel.namespace" -}}
{{- required "namespace.name must name the namespace flannel runs in" .Values.namespace.name -}}
{{- end -}}

{{/* The flannel image: one image carries flanneld and the CNI plugin. */}}
{{- define "flannel.image" -}}
{{- printf "%s:%s" .Values.flannel.image.repository (.Values.flannel.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
net-conf.json as flanneld reads it. Built as a dict so the JSON is always
well formed whichever options are set; zero-valued backend options are left
out so flanneld applies its own defaults.
*/}}
{{- define "flannel.netConf" -}}
{{- $f := .Values.flannel -}}
{{- if and (not .Values.podCidr) (not .Values.podCidrv6) -}}
{{- fail "set podCidr (IPv4), podCidrv6 (IPv6) or both: flannel needs a pod network" -}}
{{- end -}}
{{- $backend := dict "Type" $f.backend -}}
{{- if $f.backendPort }}{{ $_ := set $backend "Port" (int $f.backendPort) }}{{ end -}}
{{- if $f.vni }}{{ $_ := set $backend "VNI" (int $f.vni) }}{{ end -}}
{{- if $f.directRouting }}{{ $_ := set $backend "DirectRouting" true }}{{ end -}}
{{- if $f.mtu }}{{ $_ := set $backend "MTU" (int $f.mtu) }}{{ end -}}
{{- $backend = merge $backend ($f.extraBackendOptions | default dict) -}}
{{- $net := dict "EnableNFTables" $f.enableNFTables "Backend" $backend -}}
{{- if .Values.podCidr -}}
{{- $_ := set $net "Network" .Values.podCidr -}}
{{- else -}}
{{- $_ := set $net "EnableIPv4" false -}}
{{- end -}}
{{- if .Values.podCidrv6 -}}
{{- $_ := set $net "EnableIPv6" true -}}
{{- $_ := set $net "IPv6Network" .Values.podCidrv6 -}}
{{- end -}}
{{- toPrettyJson $net -}}
{{- end -}}
