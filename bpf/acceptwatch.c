// SPDX-License-Identifier: GPL-2.0
/* acceptwatch: one program per way of seeing an accept (user space loads only
 * the one it chose) plus the TCP state-change tracepoint that counts completed
 * handshakes. All of them share the maps below. */

#include "kernel.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "acceptwatch.h"

char LICENSE[] SEC("license") = "GPL";

/* Keep the shared types in BTF so that bpf2go generates their Go mirrors. */
const struct event *unused_event __attribute__((unused));
const enum stat *unused_stat __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));

/* Knobs set by user space before load; the verifier sees them as constants. */
const volatile __u32 target_tgid = 0;    /* 0: every process */
const volatile __u8 target_family = 0;   /* 0, 4 or 6 */
const volatile bool filter_ports = false; /* false: every port */
const volatile bool emit_events = true;   /* false: counters only (--quiet) */
const volatile __u64 wakeup_bytes = 0;    /* wake the reader once this much is queued */

/* Bumped by user space at each --interval boundary. */
volatile __u32 window_id = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} aw_events SEC(".maps");

/* Watched local ports: an array indexed by port is one load, no hashing. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} aw_ports SEC(".maps");

/* Exact counts per remote address; max_entries is --max-addresses. A plain
 * hash, not LRU: a full map must count its overflow, never evict silently. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr_key);
	__type(value, struct addr_stats);
} aw_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} aw_stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&aw_stats, &idx);

	if (v)
		(*v)++;
}

static __always_inline bool port_watched(__u16 port)
{
	__u32 key = port;
	__u8 *on;

	if (!filter_ports)
		return true;
	on = bpf_map_lookup_elem(&aw_ports, &key);
	return on && *on;
}

/* Reads a socket's addresses as 16 bytes each and returns the family as the
 * user should see it: 4 for AF_INET and for v4-mapped AF_INET6 peers. */
static __always_inline __u8 read_addrs(struct sock *sk, __u16 family, __u8 laddr[16], __u8 raddr[16])
{
	if (family == AF_INET) {
		__be32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		laddr[10] = laddr[11] = 0xff;
		raddr[10] = raddr[11] = 0xff;
		__builtin_memcpy(&laddr[12], &l, 4);
		__builtin_memcpy(&raddr[12], &r, 4);
		return 4;
	}
	/* laddr and raddr are pointers here: give the size explicitly. */
	bpf_core_read(laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
	bpf_core_read(raddr, 16, &sk->__sk_common.skc_v6_daddr);
	__u64 hi;
	__u32 mid;
	__builtin_memcpy(&hi, raddr, 8);
	__builtin_memcpy(&mid, &raddr[8], 4);
	if (hi == 0 && mid == bpf_htonl(0x0000ffff))
		return 4;
	return 6;
}

static __always_inline void count(struct addr_key *key, bool accepted)
{
	__u64 now = bpf_ktime_get_ns();
	struct addr_stats *st = bpf_map_lookup_elem(&aw_addrs, key);

	if (!st) {
		struct addr_stats init = {
			.accepted = accepted,
			.handshakes = !accepted,
			.first_ns = now,
			.last_ns = now,
			.window_first_ns = now,
			.window = window_id,
		};
		long err = bpf_map_update_elem(&aw_addrs, key, &init, BPF_NOEXIST);

		if (err == 0)
			return;
		/* Another CPU may have inserted it first; otherwise the map is full. */
		st = bpf_map_lookup_elem(&aw_addrs, key);
		if (!st) {
			stat_inc(accepted ? STAT_OVERFLOW_ACCEPTS : STAT_OVERFLOW_HANDSHAKES);
			return;
		}
	}
	if (accepted)
		__sync_fetch_and_add(&st->accepted, 1);
	else
		__sync_fetch_and_add(&st->handshakes, 1);
	st->last_ns = now;
	if (st->window != window_id) {
		st->window = window_id;
		st->window_first_ns = now;
	}
}

/* Common to every attach mode: sk is the accepted socket, lport the port of the
 * listener if the hook knows it (the accepted socket's own port reads 0 once
 * the client has reset it). */
static __always_inline void handle_accept(struct sock *sk, __u16 lport)
{
	if (!sk)
		return;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family != AF_INET && family != AF_INET6)
		return;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return;

	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;

	if (target_tgid && tgid != target_tgid)
		return;
	if (!lport)
		lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!lport)
		lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	if (!port_watched(lport))
		return;

	struct addr_key key = {};
	__u8 laddr[16] = {};
	__u8 fam = read_addrs(sk, family, laddr, key.addr);

	if (target_family && fam != target_family)
		return;
	count(&key, true);
	if (!emit_events)
		return;

	struct event *e = bpf_ringbuf_reserve(&aw_events, sizeof(*e), 0);

	if (!e) {
		stat_inc(STAT_LOST_EVENTS);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(e->laddr, laddr, 16);
	__builtin_memcpy(e->raddr, key.addr, 16);
	e->pid = tgid;
	e->lport = lport;
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->family = fam;
	e->kind = EVENT_ACCEPT;
	e->_pad[0] = e->_pad[1] = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	/* Waking the reader per event costs more than the event: wake it only
	 * once enough is queued; it also polls with a short deadline. */
	long flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&aw_events, BPF_RB_AVAIL_DATA) + sizeof(*e) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

static __always_inline __u16 sock_port(struct sock *sk)
{
	return sk ? BPF_CORE_READ(sk, __sk_common.skc_num) : 0;
}

/* fexit, kernels before 6.10: inet_csk_accept(sk, flags, err, kern). */
SEC("fexit/inet_csk_accept")
int BPF_PROG(aw_fexit_acc4, struct sock *lsk, int flags, int *err, bool kern, struct sock *ret)
{
	handle_accept(ret, sock_port(lsk));
	return 0;
}

/* fexit, 6.10 and later: inet_csk_accept(sk, struct proto_accept_arg *arg). */
SEC("fexit/inet_csk_accept")
int BPF_PROG(aw_fexit_acc2, struct sock *lsk, void *arg, struct sock *ret)
{
	handle_accept(ret, sock_port(lsk));
	return 0;
}

/* kretprobe: the return value is all there is, whatever the signature. */
SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(aw_kretprobe_acc, struct sock *ret)
{
	handle_accept(ret, 0);
	return 0;
}

/* Tracepoint mode, for kernels that allow only tracepoints: at the exit of
 * accept()/accept4() the new descriptor leads to the socket:
 * current->files->fdt->fd[ret]->private_data (struct socket)->sk. */
SEC("tracepoint/syscalls/sys_exit_accept4")
int aw_tp_accept(struct trace_event_raw_sys_exit *ctx)
{
	long fd = BPF_CORE_READ(ctx, ret);

	if (fd < 0)
		return 0;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;

	struct socket *sock = BPF_CORE_READ(file, private_data);

	handle_accept(BPF_CORE_READ(sock, sk), 0);
	return 0;
}

/* A completed handshake: the child socket moves SYN_RECV -> ESTABLISHED. This
 * runs in softirq, so the current task is unrelated: no PID, no comm. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(aw_handshake, struct sock *sk, int oldstate, int newstate)
{
	if (oldstate != TCP_SYN_RECV || newstate != TCP_ESTABLISHED)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (!port_watched(BPF_CORE_READ(sk, __sk_common.skc_num)))
		return 0;

	struct addr_key key = {};
	__u8 laddr[16] = {};
	__u8 fam = read_addrs(sk, family, laddr, key.addr);

	if (target_family && fam != target_family)
		return 0;
	count(&key, false);
	return 0;
}
