// SPDX-License-Identifier: GPL-2.0
/* Reading sockets: the fields of struct sock_common acceptwatch uses, and
 * which sockets it reports (family, watched port, -4/-6). */
#pragma once

#include "maps.h"

/* Kernel field reads. Programs handed kernel pointers with BTF types (fexit,
 * tp_btf) load fields directly: the verifier makes those fault-safe loads,
 * several times cheaper than one bpf_probe_read_kernel() call each. Kprobes
 * and classic tracepoints must use the helper. `direct` is a constant at
 * every call site, so each program holds one form only. */
#define RD(direct, ptr, field) ((direct) ? (ptr)->field : BPF_CORE_READ(ptr, field))

/* The fields of a socket's struct sock_common that acceptwatch uses. */
struct skc {
	__u32 v6_daddr[4], v6_rcv_saddr[4];
	__be32 daddr, rcv_saddr;
	__be16 dport;
	__u16 num;
	__u16 family;
	__u8 state;
};

#define SKC_OFF(f) bpf_core_field_offset(((struct sock *)0)->__sk_common.f)
/* Bytes of struct sock_common up to the end of skc_v6_rcv_saddr: 88 on
 * x86-64 in every kernel since 4.x; a larger layout takes the slow path. */
#define SKC_SPAN 96

/* Reads a socket's struct sock_common: fields directly where the pointer has
 * a BTF type, else one probe read of the whole span in place of eight. Works
 * for request sockets too: they begin with the same struct sock_common. */
static __always_inline bool load_skc(bool direct, struct sock *sk, struct skc *c)
{
	__u64 buf[SKC_SPAN / 8];
	__u32 span = SKC_OFF(skc_v6_rcv_saddr) + 16;

	if (direct || span > sizeof(buf)) {
		c->family = RD(direct, sk, __sk_common.skc_family);
		c->num = RD(direct, sk, __sk_common.skc_num);
		c->dport = RD(direct, sk, __sk_common.skc_dport);
		c->state = RD(direct, sk, __sk_common.skc_state);
		if (c->family == AF_INET) {
			c->daddr = RD(direct, sk, __sk_common.skc_daddr);
			c->rcv_saddr = RD(direct, sk, __sk_common.skc_rcv_saddr);
		} else if (direct) {
			__builtin_memcpy(c->v6_daddr, &sk->__sk_common.skc_v6_daddr, 16);
			__builtin_memcpy(c->v6_rcv_saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		} else {
			bpf_core_read(c->v6_daddr, 16, &sk->__sk_common.skc_v6_daddr);
			bpf_core_read(c->v6_rcv_saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		}
		return true;
	}
	if (bpf_probe_read_kernel(buf, span, sk))
		return false;
	/* Offsets are load-time constants; each field is naturally aligned. */
	void *b = buf;

	c->family = *(__u16 *)(b + SKC_OFF(skc_family));
	c->num = *(__u16 *)(b + SKC_OFF(skc_num));
	c->dport = *(__be16 *)(b + SKC_OFF(skc_dport));
	c->state = *(__u8 *)(b + SKC_OFF(skc_state));
	c->daddr = *(__be32 *)(b + SKC_OFF(skc_daddr));
	c->rcv_saddr = *(__be32 *)(b + SKC_OFF(skc_rcv_saddr));
#pragma unroll
	for (int i = 0; i < 4; i++) {
		c->v6_daddr[i] = *(__u32 *)(b + SKC_OFF(skc_v6_daddr) + 4 * i);
		c->v6_rcv_saddr[i] = *(__u32 *)(b + SKC_OFF(skc_v6_rcv_saddr) + 4 * i);
	}
	return true;
}

/* A socket's addresses as 16 bytes each, and the family as the user should
 * see it: 4 for AF_INET and for v4-mapped AF_INET6 peers. */
static __always_inline __u8 skc_addrs(struct skc *c, __u8 laddr[16], __u8 raddr[16])
{
	if (c->family == AF_INET) {
		laddr[10] = laddr[11] = 0xff;
		raddr[10] = raddr[11] = 0xff;
		__builtin_memcpy(&laddr[12], &c->rcv_saddr, 4);
		__builtin_memcpy(&raddr[12], &c->daddr, 4);
		return 4;
	}
	__builtin_memcpy(laddr, c->v6_rcv_saddr, 16);
	__builtin_memcpy(raddr, c->v6_daddr, 16);
	if (c->v6_daddr[0] == 0 && c->v6_daddr[1] == 0 && c->v6_daddr[2] == bpf_htonl(0x0000ffff))
		return 4;
	return 6;
}

/* A socket's network namespace (its inode), which every count is kept by:
 * the socket's, never the current task's (softirq runs in anyone's). */
static __always_inline __u32 sk_netns(bool direct, struct sock *sk)
{
	if (direct)
		return sk->__sk_common.skc_net.net->ns.inum;
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Is socket sk in the watched cgroup's subtree (--cgroup)? A socket's cgroup
 * is its creator's when it was made; an accepted socket inherits its
 * listener's, so a server's connections all count where its listener does,
 * whoever accepts them (and in softirq, where the current task is anyone).
 * Only with --cgroup: probe reads (a few per event), not direct loads, as
 * the field's type changed in 5.15. */
static __always_inline bool cgroup_watched(struct sock *sk)
{
	if (!target_cgroup)
		return true;
	__u64 v = 0;

	if (!sk || bpf_probe_read_kernel(&v, sizeof(v), (void *)sk + bpf_core_field_offset(struct sock, sk_cgrp_data)))
		return false;
	/* None, or net_cls/net_prio data in its place (before 5.15): the root. */
	if (!v || (v & 3))
		return target_cgroup_level == 0;
	struct cgroup *cg = (struct cgroup *)v;

	if (BPF_CORE_READ(cg, level) < (int)target_cgroup_level)
		return false;
	__u64 id = 0;

	if (bpf_core_field_exists(struct cgroup___ptrs, ancestors)) {
		struct cgroup *a = NULL;

		bpf_probe_read_kernel(&a, sizeof(a), (void *)cg + bpf_core_field_offset(struct cgroup___ptrs, ancestors) +
						     target_cgroup_level * sizeof(a));
		if (!a)
			return false;
		id = BPF_CORE_READ(a, kn, id);
	} else {
		bpf_probe_read_kernel(&id, sizeof(id), (void *)cg + bpf_core_field_offset(struct cgroup___ids, ancestor_ids) +
						       target_cgroup_level * sizeof(id));
	}
	return id == target_cgroup;
}

/* A TCP socket of a family acceptwatch reports, on a watched port and in a
 * watched namespace and cgroup? Fills the remote address key (with sk's
 * namespace) and returns the family (4 or 6), 0 to ignore. owner is the
 * socket whose cgroup decides: sk itself, or the listener of a request
 * socket (which has no cgroup of its own). */
static __always_inline __u8 watched(bool direct, struct sock *sk, struct sock *owner, struct skc *c, __u16 lport,
				    struct addr_key *key, __u8 laddr[16])
{
	if (c->family != AF_INET && c->family != AF_INET6)
		return 0;
	if (!port_watched(lport))
		return 0;
	key->netns = sk_netns(direct, sk);
	if (!netns_watched(key->netns) || !cgroup_watched(owner))
		return 0;
	__u8 fam = skc_addrs(c, laddr, key->addr);

	if (target_family && fam != target_family)
		return 0;
	return fam;
}
