// SPDX-License-Identifier: GPL-2.0
/* Handshakes dropped because the accept queue was full, per address: the
 * kernel frees the final ACK with the drop reason TCP_LISTEN_OVERFLOW (from
 * 6.15). The reason's number differs between kernels: user space resolves it
 * by name from kernel BTF, and does not load this program where it is absent. */
#include "pkt.h"
#include "sock.h"

/* In a section of its own: it is set from kernel BTF, which is parsed while
 * the shared maps (and .rodata) are made, and only this program reads it. */
const volatile __u32 listen_overflow_reason SEC(".rodata.drop") = 0;

/* rx_sk (6.11+, so there wherever the reason is) is the listener that
 * dropped it: --cgroup decides by its cgroup; the argument is read only then. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(aw_drop, struct sk_buff *skb, void *location, int reason, struct sock *rx_sk)
{
	if (reason != listen_overflow_reason)
		return 0;
	if (target_cgroup && !cgroup_watched(rx_sk))
		return 0;
	__u8 *head = skb->head;
	__u8 ip[IP6_HLEN];
	__u8 th[4];

	if (bpf_probe_read_kernel(ip, sizeof(ip), head + skb->network_header))
		return 0;
	if (bpf_probe_read_kernel(th, sizeof(th), head + skb->transport_header))
		return 0;
	__u8 ver = ip[0] >> 4;

	if (ver != 4 && ver != 6)
		return 0;
	__u16 lport = (th[2] << 8) | th[3];

	struct addr_key key = {};

	/* The namespace of the device it came in by: the listener's. */
	struct net_device *dev = skb->dev;

	if (!port_watched(lport) || !dev || !pkt_watched(ip, ver, dev->nd_net.net->ns.inum, &key))
		return 0;
	struct delta d = { .drop = true };

	pkt_count(&key, lport, &d);
	return 0;
}
