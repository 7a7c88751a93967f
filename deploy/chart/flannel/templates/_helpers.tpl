{{/*
Namespace of every namespaced object: the release's, as upstream's chart,
unless the chart creates the namespace itself (namespace.create).
Values only this chart has may be missing altogether: `helm upgrade
--reuse-values` from a release of upstream's chart renders with upstream's
values in place of this chart's defaults.
*/}}
{{- define "flannel.namespace" -}}
{{- $v := .Values.namespace | default dict -}}
{{- if $v.create -}}
{{- $ns := required "namespace.name must name the namespace the chart creates" $v.name -}}
{{- if eq $ns .Release.Namespace -}}
{{- fail (printf "namespace.create=true makes the chart own namespace %s, but Helm keeps the release in it, so it must exist first: install the release into another namespace (-n kube-system), or create and label %s yourself and leave namespace.create false" $ns $ns) -}}
{{- end -}}
{{- $ns -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The flannel image: one image carries flanneld and the CNI plugin. */}}
{{- define "flannel.image" -}}
{{- printf "%s:%s" .Values.flannel.image.repository (.Values.flannel.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The install-cni-plugin image: flannel_cni.image, else flannel.image. */}}
{{- define "flannel.cniImage" -}}
{{- $i := (.Values.flannel.flannel_cni | default dict).image | default dict -}}
{{- if $i.repository -}}
{{- printf "%s:%s" $i.repository ($i.tag | default .Chart.AppVersion) -}}
{{- else -}}
{{- include "flannel.image" . -}}
{{- end -}}
{{- end -}}

{{/*
net-conf.json "Backend". Each value goes to the keys upstream's chart maps it
to for that backend type; zero values are left out so flanneld applies its
own defaults; extraBackendOptions are merged in last. Built as a dict so the
JSON is well formed whatever is set (upstream writes tunnelMode unquoted).
*/}}
{{- define "flannel.backend" -}}
{{- $f := .Values.flannel -}}
{{- $b := dict "Type" $f.backend -}}
{{- if eq $f.backend "vxlan" -}}
{{- if $f.backendPort }}{{ $_ := set $b "Port" (int $f.backendPort) }}{{ end -}}
{{- if $f.vni }}{{ $_ := set $b "VNI" (int $f.vni) }}{{ end -}}
{{- if $f.GBP }}{{ $_ := set $b "GBP" true }}{{ end -}}
{{- if $f.directRouting }}{{ $_ := set $b "DirectRouting" true }}{{ end -}}
{{- if $f.mtu }}{{ $_ := set $b "MTU" (int $f.mtu) }}{{ end -}}
{{- if $f.macPrefix }}{{ $_ := set $b "MacPrefix" (toString $f.macPrefix) }}{{ end -}}
{{- else if eq $f.backend "wireguard" -}}
{{- if $f.backendPort }}{{ $_ := set $b "ListenPort" (int $f.backendPort) }}{{ end -}}
{{- if $f.backendPortv6 }}{{ $_ := set $b "ListenPortV6" (int $f.backendPortv6) }}{{ end -}}
{{- if $f.psk }}{{ $_ := set $b "PSK" (toString $f.psk) }}{{ end -}}
{{- if $f.mtu }}{{ $_ := set $b "MTU" (int $f.mtu) }}{{ end -}}
{{- if $f.tunnelMode }}{{ $_ := set $b "Mode" (toString $f.tunnelMode) }}{{ end -}}
{{- if $f.keepaliveInterval }}{{ $_ := set $b "PersistentKeepaliveInterval" (int $f.keepaliveInterval) }}{{ end -}}
{{- else if eq $f.backend "udp" -}}
{{- if $f.backendPort }}{{ $_ := set $b "Port" (int $f.backendPort) }}{{ end -}}
{{- end -}}
{{- if eq (toString $f.datapath) "ebpf" -}}
{{- if not (has $f.backend (list "host-gw" "vxlan")) -}}
{{- fail (printf "flannel.datapath=ebpf works with flannel.backend host-gw or vxlan, not %s" $f.backend) -}}
{{- end -}}
{{- $_ := set $b "Datapath" "ebpf" -}}
{{- end -}}
{{- toJson (merge $b ($f.extraBackendOptions | default dict)) -}}
{{- end -}}

{{/* net-conf.json as flanneld reads it. */}}
{{- define "flannel.netConf" -}}
{{- if and (not .Values.podCidr) (not .Values.podCidrv6) -}}
{{- fail "set podCidr (IPv4), podCidrv6 (IPv6) or both: flannel needs a pod network" -}}
{{- end -}}
{{- $net := dict "EnableNFTables" (.Values.flannel.enableNFTables | default false) "Backend" (include "flannel.backend" . | fromJson) -}}
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
