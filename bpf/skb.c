// SPDX-License-Identifier: GPL-2.0
/* SYNs per address in every attach mode: a cgroup_skb/ingress program on the
 * cgroup v2 root (with --cgroup, on that cgroup: the kernel then runs it only
 * for sockets in its subtree, the filter the other hooks apply). It runs for every packet delivered to a socket of the
 * machine (any network namespace), after the socket lookup and before TCP
 * handles the packet: it sees each SYN that reached a listener, including
 * those tcp_conn_request then drops (full queues) or answers with a
 * syncookie. It only counts: every packet passes. Everything that is not a
 * TCP SYN (no ACK) to a watched port leaves after a few loads. */
#include "pkt.h"

struct tcp_sock;

/* Will the listener drop this SYN because its accept queue is full? That is
 * the test tcp_conn_request makes next (the drop has no drop reason), but
 * only for a new connection: a SYN resent for a handshake under way goes to
 * its request socket, which the lookup finds first. Only a full queue pays
 * for the lookup. */
static __always_inline bool syn_dropped(struct __sk_buff *skb, struct sock *lsk, __u8 *ip, __u8 *th, __u8 ver)
{
	/* sk_acceptq_is_full() */
	if (!lsk || lsk->sk_ack_backlog <= lsk->sk_max_ack_backlog)
		return false;
	struct bpf_sock_tuple t = {};
	__u32 len;

	if (ver == 4) {
		__builtin_memcpy(&t.ipv4.saddr, ip + 12, 8); /* saddr, daddr */
		__builtin_memcpy(&t.ipv4.sport, th, 4);      /* sport, dport */
		len = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.saddr, ip + 8, 32);
		__builtin_memcpy(&t.ipv6.sport, th, 4);
		len = sizeof(t.ipv6);
	}
	struct bpf_sock *s = bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);

	if (!s)
		return true;
	bool pending = s->state == BPF_TCP_NEW_SYN_RECV;

	bpf_sk_release(s);
	return !pending;
}

/* bpf_skc_to_tcp_sock in cgroup programs needs 5.9; every kernel with
 * cgroup links but without it (5.7, 5.8) counts SYNs at tcp_conn_request. */
SEC("cgroup_skb/ingress")
int aw_syn_skb(struct __sk_buff *skb)
{
	/* At this hook data is the network header. */
	__u8 *ip = (__u8 *)(long)skb->data;
	__u8 *end = (__u8 *)(long)skb->data_end;
	__u8 *th;

	if (ip + IP4_HLEN > end)
		return 1;
	__u8 ver = ip[0] >> 4;

	if (ver == 4) {
		/* TCP, and not a later fragment (a SYN is never one). */
		if (ip[9] != IPPROTO_TCP || (ip[6] & 0x1f) || ip[7])
			return 1;
		th = ip + (ip[0] & 0xf) * 4;
	} else if (ver == 6) {
		/* Extension headers before TCP are not followed: SYNs carry none. */
		if (ip + IP6_HLEN > end || ip[6] != IPPROTO_TCP)
			return 1;
		th = ip + IP6_HLEN;
	} else {
		return 1;
	}
	if (th + TCP_HLEN > end)
		return 1;
	if ((th[TCP_FLAGS_OFF] & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return 1;
	__u16 lport = (th[2] << 8) | th[3];

	struct addr_key key = {};

	if (!port_watched(lport))
		return 1;
	/* The listener the lookup found gives the namespace (a BTF pointer from
	 * 5.9: direct loads). None (not a full TCP socket): namespace 0, shown
	 * as unknown, and never counted when one namespace is watched. */
	struct bpf_sock *bsk = skb->sk;
	struct sock *lsk = bsk ? (struct sock *)bpf_skc_to_tcp_sock(bsk) : NULL;

	if (!pkt_watched(ip, ver, lsk ? lsk->__sk_common.skc_net.net->ns.inum : 0, &key))
		return 1;
	struct delta d = { .syn = true };

	d.drop = syn_dropped(skb, lsk, ip, th, ver);
	pkt_count(&key, lport, &d);
	return 1;
}
