// SPDX-License-Identifier: GPL-2.0
/* SYNs per address at tcp_conn_request (fexit and kretprobe modes). */
#include "sock.h"

/* A SYN reaches a listener: tcp_conn_request(rsk_ops, af_ops, sk, skb) runs
 * for every SYN a listening socket handles, before it may drop it (full
 * queues). The client's address is the source of the IP header. No
 * tracepoint shows this, so only the fexit and kretprobe modes count SYNs. */
static __always_inline void count_syn(bool direct, struct sock *lsk, struct sk_buff *skb)
{
	__u16 lport = RD(direct, lsk, __sk_common.skc_num);

	if (!port_watched(lport))
		return;
	unsigned char *ip = RD(direct, skb, head) + RD(direct, skb, network_header);
	__be16 proto = RD(direct, skb, protocol);
	struct addr_key key = {};
	__u8 fam = 4;

	if (proto == bpf_htons(0x0800)) {
		key.addr[10] = key.addr[11] = 0xff;
		if (bpf_probe_read_kernel(&key.addr[12], 4, ip + 12))
			return;
	} else if (proto == bpf_htons(0x86DD)) {
		if (bpf_probe_read_kernel(key.addr, 16, ip + 8))
			return;
		__u64 hi;
		__u32 mid;
		__builtin_memcpy(&hi, key.addr, 8);
		__builtin_memcpy(&mid, &key.addr[8], 4);
		if (hi != 0 || mid != bpf_htonl(0x0000ffff))
			fam = 6;
	} else {
		return;
	}
	if (target_family && fam != target_family)
		return;
	key.netns = sk_netns(direct, lsk);
	if (!netns_watched(key.netns) || !cgroup_watched(lsk))
		return;
	struct delta d = { .syn = true };

	count_addr(&key, &d, bpf_ktime_get_ns());
	count_port(key.netns, lport, &d);
}

SEC("fentry/tcp_conn_request")
int BPF_PROG(aw_fentry_syn, void *rsk_ops, void *af_ops, struct sock *sk, struct sk_buff *skb)
{
	count_syn(true, sk, skb);
	return 0;
}

SEC("kprobe/tcp_conn_request")
int BPF_KPROBE(aw_kprobe_syn, void *rsk_ops, void *af_ops, struct sock *sk, struct sk_buff *skb)
{
	count_syn(false, sk, skb);
	return 0;
}
