// SPDX-License-Identifier: GPL-2.0
/* BTF tracepoints of the TCP stack, loaded in every attach mode: completed
 * handshakes, destroyed sockets, SYN-ACK retransmits. */
#include "sock.h"

/* A completed handshake: the child socket moves SYN_RECV -> ESTABLISHED. This
 * runs in softirq, so the current task is unrelated: no PID, no comm. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(aw_handshake, struct sock *sk, int oldstate, int newstate)
{
	if (oldstate != TCP_SYN_RECV || newstate != TCP_ESTABLISHED)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;

	__u16 lport = sk->__sk_common.skc_num;
	struct skc c = {};
	struct addr_key key = {};
	__u8 laddr[16] = {};

	if (!port_watched(lport) || !load_skc(true, sk, &c) || !watched(true, sk, sk, &c, lport, &key, laddr))
		return 0;

	struct delta d = { .handshake = true };
	__u64 now = bpf_ktime_get_ns();

	count_addr(&key, &d, now);
	count_port(key.netns, lport, &d);

	/* Already accepted (see handle_accept): nothing will wait. */
	if (!sk->sk_socket)
		pending_put((__u64)sk, now, lport);
	return 0;
}

/* A socket is destroyed: if its handshake completed and no accept took it,
 * it was never accepted (e.g. the listener closed with it queued). */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(aw_destroy, struct sock *sk)
{
	struct pending p;

	if (!pending_take((__u64)sk, &p))
		return 0;
	__u16 lport = p.lport;

	struct skc c = {};
	struct addr_key key = {};
	__u8 laddr[16] = {};

	if (!load_skc(true, sk, &c) || !watched(true, sk, sk, &c, lport, &key, laddr))
		return 0;
	struct delta d = { .not_accepted = true };

	count_addr(&key, &d, bpf_ktime_get_ns());
	count_port(key.netns, lport, &d);
	return 0;
}

/* The listener resends a SYN-ACK: the client has not completed the
 * handshake (a half-open connection, as in a SYN flood). */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(aw_synack, struct sock *lsk, struct sock *req)
{
	__u16 lport = lsk->__sk_common.skc_num;
	struct skc c = {};
	struct addr_key key = {};
	__u8 laddr[16] = {};

	if (!port_watched(lport) || !load_skc(true, req, &c) || !watched(true, req, lsk, &c, lport, &key, laddr))
		return 0;
	struct delta d = { .synack = true };

	count_addr(&key, &d, bpf_ktime_get_ns());
	count_port(key.netns, lport, &d);
	return 0;
}
