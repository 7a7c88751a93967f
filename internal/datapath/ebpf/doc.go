// Package ebpf is flannel's optional eBPF fast path ("Datapath": "ebpf" in
// net-conf.json's Backend, host-gw and vxlan only). Two tc programs
// (bpf/fastpath.c) move pod traffic without the bridge and netfilter:
// from_pod at ingress of each pod's host-side veth redirects a packet for
// another node's pod to the uplink (bpf_fib_lookup + bpf_redirect_neigh)
// and one for a pod of this node into that pod (bpf_redirect_peer); to_pod
// at ingress of the uplink (the external interface for host-gw,
// flannel.<VNI> for vxlan) redirects a packet for a pod of this node into
// the pod. Whatever they do not fully understand, or what masquerade,
// Services (conntrack) or policy must see, passes to the kernel path
// unchanged, so the fast path changes speed, never semantics.
//
// A Datapath loads the programs, keeps them attached (tcx where the kernel
// has it, a clsact qdisc's filter otherwise) to the bridge's ports and the
// uplink, and keeps the pod map equal to the pods the flannel CNI plugin
// recorded. Its links belong to flanneld's process: when flanneld stops,
// the kernel detaches them and pods fall back to the kernel path.
package ebpf
