// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// flannel's eBPF fast path: tc programs that move pod traffic between a
// pod's veth and the node's uplink (or another pod's veth) without the
// bridge and netfilter. They are only a shortcut: every packet they do not
// fully understand, or that masquerade, Services or policy must see, goes
// on to the kernel path unchanged (TC_ACT_OK). Only IPv4 TCP and UDP
// without IP options or fragmentation take the shortcut.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define CURRENT_NETNS (-1)

char __license[] SEC("license") = "Dual BSD/GPL";

// Counters, one slot each in the per-CPU stats array; flanneld's collector
// names them (internal/datapath/ebpf/stats.go), so keep the two in step.
enum stat {
	STAT_LOCAL = 0,     // pod to pod on this node, redirected into the peer
	STAT_REMOTE,        // pod to a remote pod, redirected to the uplink
	STAT_INBOUND,       // uplink to a local pod, redirected into the pod
	STAT_FB_PROTO,      // not IPv4 TCP/UDP, or options/fragments
	STAT_FB_DEST,       // destination outside the pod network, the host, or unknown
	STAT_FB_SOURCE,     // source address or MAC not the sending pod's own
	STAT_FB_POLICY,     // a policy selects the pod: the kernel enforces it
	STAT_FB_CONNTRACK,  // a flow conntrack translates (Services, hostPort, masquerade)
	STAT_FB_ROUTE,      // the route leaves by another device, or no route, or TTL
	STAT_FB_MTU,        // too big for the egress device: the kernel fragments or answers
	STAT_MAX,
};

// Set while the node's policy-selected pods are not known yet: every pod
// then takes the kernel path.
#define CFG_ALL_KERNEL 1

struct config {
	__be32 cluster_net;
	__be32 cluster_mask;
	__be32 local_net;
	__be32 local_mask;
	__u32 uplink_ifindex;
	__u32 flags;
	__u8 bridge_mac[ETH_ALEN];
	__u8 pad[2];
};

struct pod {
	__u32 ifindex;          // host-side veth
	__u8 mac[ETH_ALEN];     // the pod's own MAC
	__u8 kernel_only;       // selected by a policy
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __be32);
	__type(value, struct pod);
} pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

// The conntrack kfuncs (net/netfilter/nf_conntrack_bpf.c); the 12-byte
// options layout is the one every kernel since 6.0 accepts.
struct bpf_ct_opts___fp {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};
// The one field read, relocated against the kernel's BTF (CO-RE).
struct nf_conn {
	unsigned long status;
} __attribute__((preserve_access_index));
#define IPS_SRC_NAT (1 << 4)
#define IPS_DST_NAT (1 << 5)
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple_len, struct bpf_ct_opts___fp *opts,
					 __u32 opts_len) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

// flow is what the programs read from a packet before deciding.
struct flow {
	__be32 saddr, daddr;
	__be16 sport, dport;
	__u8 proto, tos, ttl;
};

static __always_inline int count(enum stat s)
{
	__u32 key = s;
	__u64 *v = bpf_map_lookup_elem(&stats, &key);
	if (v)
		*v += 1;
	return 0;
}

static __always_inline int pass(enum stat s)
{
	count(s);
	return TC_ACT_OK;
}

static __always_inline int in_net(__be32 a, __be32 net, __be32 mask)
{
	return mask && (a & mask) == net;
}

// parse fills f from an IPv4 TCP or UDP packet without options or
// fragmentation; anything else returns -1.
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__be16 *ports = (void *)(ip + 1);

	if ((void *)(ports + 2) > end)
		return -1;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->version != 4)
		return -1;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->sport = ports[0];
	f->dport = ports[1];
	f->proto = ip->protocol;
	f->tos = ip->tos;
	f->ttl = ip->ttl;
	return 0;
}

// natted reports whether the kernel's conntrack translates the flow (in
// either direction): kube-proxy's Services, hostPort and masquerade need
// it to see every packet.
static __always_inline int natted(struct __sk_buff *skb, struct flow *f)
{
	struct bpf_sock_tuple t = {};
	struct bpf_ct_opts___fp o = { .netns_id = CURRENT_NETNS, .l4proto = f->proto };
	struct nf_conn *ct;
	unsigned long nat;

	t.ipv4.saddr = f->saddr;
	t.ipv4.daddr = f->daddr;
	t.ipv4.sport = f->sport;
	t.ipv4.dport = f->dport;
	ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &o, sizeof(o));
	if (!ct)
		return 0;
	nat = ct->status & (IPS_SRC_NAT | IPS_DST_NAT);
	bpf_ct_release(ct);
	return nat != 0;
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

// rewrite sets the Ethernet addresses and, for a routed packet, takes one
// off the TTL with the incremental checksum update the kernel uses
// (ip_decrease_ttl). It re-reads the packet: helpers called since parse
// may have moved it.
static __always_inline int rewrite(struct __sk_buff *skb, const __u8 *dst, const __u8 *src, int routed)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > end)
		return -1;
	if (dst)
		__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	if (src)
		__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	if (routed) {
		__u32 check = ip->check;
		check += bpf_htons(0x0100);
		ip->check = (__be16)(check + (check >= 0xFFFF));
		ip->ttl--;
	}
	return 0;
}

static __always_inline int source_ok(struct __sk_buff *skb, const struct pod *src)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return 0;
	return src->ifindex == skb->ifindex && mac_eq(eth->h_source, src->mac);
}

// to_local_pod hands a packet for a pod of this node straight to the pod's
// side of its veth.
static __always_inline int to_local_pod(struct __sk_buff *skb, struct flow *f, const struct pod *dst,
					const struct config *cfg, int routed, enum stat ok)
{
	__u32 mtu = 0;

	if (dst->kernel_only)
		return pass(STAT_FB_POLICY);
	if (routed && f->ttl <= 1)
		return pass(STAT_FB_ROUTE);
	if (natted(skb, f))
		return pass(STAT_FB_CONNTRACK);
	if (bpf_check_mtu(skb, dst->ifindex, &mtu, 0, 0) != BPF_MTU_CHK_RET_SUCCESS)
		return pass(STAT_FB_MTU);
	if (rewrite(skb, dst->mac, routed ? cfg->bridge_mac : 0, routed) < 0)
		return pass(STAT_FB_PROTO);
	count(ok);
	return bpf_redirect_peer(dst->ifindex, 0);
}

// to_remote_pod routes a packet for another node's pod out of the uplink,
// the kernel resolving the neighbour (and, on flannel.1, encapsulating).
static __always_inline int to_remote_pod(struct __sk_buff *skb, struct flow *f, const struct config *cfg)
{
	struct bpf_fib_lookup p = {};
	struct bpf_redir_neigh nh = {};
	__u32 mtu = 0;
	long rc;

	if (f->ttl <= 1)
		return pass(STAT_FB_ROUTE);
	p.family = AF_INET;
	p.tos = f->tos;
	p.l4_protocol = f->proto;
	p.ipv4_src = f->saddr;
	p.ipv4_dst = f->daddr;
	p.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return pass(STAT_FB_ROUTE);
	if (p.ifindex != cfg->uplink_ifindex)
		return pass(STAT_FB_ROUTE);
	if (natted(skb, f))
		return pass(STAT_FB_CONNTRACK);
	if (bpf_check_mtu(skb, p.ifindex, &mtu, 0, 0) != BPF_MTU_CHK_RET_SUCCESS)
		return pass(STAT_FB_MTU);
	if (rewrite(skb, 0, 0, 1) < 0)
		return pass(STAT_FB_PROTO);
	nh.nh_family = AF_INET;
	nh.ipv4_nh = p.ipv4_dst;
	count(STAT_REMOTE);
	return bpf_redirect_neigh(p.ifindex, &nh, sizeof(nh), 0);
}

// from_pod runs at tc ingress of a pod's host-side veth: packets the pod
// sends.
SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config_map, &zero);
	struct pod *src, *dst;
	struct flow f = {};

	if (!cfg)
		return TC_ACT_OK;
	if (parse(skb, &f) < 0)
		return pass(STAT_FB_PROTO);
	if (!in_net(f.daddr, cfg->cluster_net, cfg->cluster_mask))
		return pass(STAT_FB_DEST);
	src = bpf_map_lookup_elem(&pods, &f.saddr);
	if (!src || !source_ok(skb, src))
		return pass(STAT_FB_SOURCE);
	if ((cfg->flags & CFG_ALL_KERNEL) || src->kernel_only)
		return pass(STAT_FB_POLICY);
	if (!in_net(f.daddr, cfg->local_net, cfg->local_mask))
		return to_remote_pod(skb, &f, cfg);
	dst = bpf_map_lookup_elem(&pods, &f.daddr);
	if (!dst)
		return pass(STAT_FB_DEST);
	// Pods of one node share the bridge's segment: the kernel bridges
	// their packets, so the TTL stays and the source MAC is the pod's.
	return to_local_pod(skb, &f, dst, cfg, 0, STAT_LOCAL);
}

// to_pod runs at tc ingress of the uplink (the external interface for
// host-gw, flannel.<VNI> for vxlan): packets from other nodes' pods to
// pods of this node. The uplink carries the node's own traffic too, which
// passes without being counted.
SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config_map, &zero);
	struct pod *dst;
	struct flow f = {};

	if (!cfg)
		return TC_ACT_OK;
	if (parse(skb, &f) < 0)
		return TC_ACT_OK;
	if (!in_net(f.daddr, cfg->local_net, cfg->local_mask))
		return TC_ACT_OK;
	if (!in_net(f.saddr, cfg->cluster_net, cfg->cluster_mask))
		return pass(STAT_FB_DEST);
	dst = bpf_map_lookup_elem(&pods, &f.daddr);
	if (!dst)
		return pass(STAT_FB_DEST);
	if (cfg->flags & CFG_ALL_KERNEL)
		return pass(STAT_FB_POLICY);
	return to_local_pod(skb, &f, dst, cfg, 1, STAT_INBOUND);
}
