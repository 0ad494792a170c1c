// SPDX-License-Identifier: GPL-2.0
/* acceptwatch: the programs of one accept hook per attach mode (user space
 * loads only the mode it chose) and the TCP tracepoints that every mode uses:
 * completed handshakes, destroyed sockets, SYN-ACK retransmits. */

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
const struct port_stats *unused_port_stats __attribute__((unused));
const enum stat *unused_stat __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum event_flags *unused_event_flags __attribute__((unused));

/* Knobs set by user space before load; the verifier sees them as constants. */
const volatile __u32 target_tgid = 0;     /* 0: every process */
const volatile __u8 target_family = 0;    /* 0, 4 or 6 */
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

/* Per listening port, per CPU: every accept updates its port's counters, and
 * one shared copy would bounce between the CPUs' caches. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct port_stats);
} aw_lports SEC(".maps");

/* Completed handshakes not yet accepted, by child socket address. (A
 * direct-mapped array keyed by the connection hash was tried: no cheaper
 * here, as the cost is the cache line moving from the handshake's CPU to the
 * acceptor's, which any table pays.) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct pending);
} aw_pending SEC(".maps");

/* The listener of an accept() under way, by thread: kretprobe and
 * tracepoint modes see it at entry and need it at exit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} aw_listeners SEC(".maps");

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

/* Records a completed handshake of socket sk. */
static __always_inline void pending_put(__u64 sk, __u64 ts, __u16 lport)
{
	struct pending p = { .ts_ns = ts, .lport = lport };

	if (bpf_map_update_elem(&aw_pending, &sk, &p, BPF_ANY))
		stat_inc(STAT_PENDING_FULL);
}

/* Takes the handshake record of socket sk out, if there is one. */
static __always_inline bool pending_take(__u64 sk, struct pending *out)
{
	struct pending *p = bpf_map_lookup_elem(&aw_pending, &sk);

	if (!p)
		return false;
	*out = *p;
	bpf_map_delete_elem(&aw_pending, &sk);
	return true;
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

/* A TCP socket of a family acceptwatch reports, on a watched port? Fills the
 * remote address key and returns the family (4 or 6), 0 to ignore. */
static __always_inline __u8 watched(struct skc *c, __u16 lport, struct addr_key *key, __u8 laddr[16])
{
	if (c->family != AF_INET && c->family != AF_INET6)
		return 0;
	if (!port_watched(lport))
		return 0;
	__u8 fam = skc_addrs(c, laddr, key->addr);

	if (target_family && fam != target_family)
		return 0;
	return fam;
}

static __always_inline __u32 wait_bucket(__u64 ns)
{
	__u64 us = ns / 1000;
	__u32 b = 0;

	/* floor(log2(us)) + 1 without a loop; 0 for waits under 1 us. */
	if (us >= 1ULL << 16) { us >>= 16; b += 16; }
	if (us >= 1ULL << 8) { us >>= 8; b += 8; }
	if (us >= 1ULL << 4) { us >>= 4; b += 4; }
	if (us >= 1ULL << 2) { us >>= 2; b += 2; }
	if (us >= 1ULL << 1) { us >>= 1; b += 1; }
	b += us; /* us is 0 or 1 here */
	if (b > WAIT_BUCKETS - 1)
		b = WAIT_BUCKETS - 1;
	return b;
}

static __always_inline void max_u64(__u64 *dst, __u64 v)
{
	if (v > *dst)
		*dst = v;
}

/* What one event adds to an address's or a port's counters. */
struct delta {
	bool accepted, handshake, not_accepted, gone, synack, syn, has_wait, has_backlog;
	__u64 wait_ns;
	__u32 backlog, backlog_limit;
};

static __always_inline struct addr_stats *addr_entry(struct addr_key *key, __u64 now)
{
	struct addr_stats *st = bpf_map_lookup_elem(&aw_addrs, key);

	if (st)
		return st;
	struct addr_stats init = {
		.first_ns = now,
		.last_ns = now,
		.window_first_ns = now,
		.window = window_id,
	};
	/* NOEXIST: another CPU may have inserted it first; then use theirs. */
	bpf_map_update_elem(&aw_addrs, key, &init, BPF_NOEXIST);
	return bpf_map_lookup_elem(&aw_addrs, key);
}

/* now is the caller's bpf_ktime_get_ns(): one clock read per event. */
static __always_inline void count_addr(struct addr_key *key, struct delta *d, __u64 now)
{
	struct addr_stats *st = addr_entry(key, now);

	if (!st) {
		stat_inc(d->accepted ? STAT_OVERFLOW_ACCEPTS :
			 d->handshake ? STAT_OVERFLOW_HANDSHAKES : STAT_OVERFLOW_OTHER);
		return;
	}
	if (d->accepted)
		__sync_fetch_and_add(&st->accepted, 1);
	if (d->handshake)
		__sync_fetch_and_add(&st->handshakes, 1);
	if (d->not_accepted)
		__sync_fetch_and_add(&st->not_accepted, 1);
	if (d->gone)
		__sync_fetch_and_add(&st->gone, 1);
	if (d->synack)
		__sync_fetch_and_add(&st->synack_retrans, 1);
	if (d->syn)
		__sync_fetch_and_add(&st->syns, 1);
	if (d->has_wait) {
		__u32 b = wait_bucket(d->wait_ns) & (WAIT_BUCKETS - 1);

		__sync_fetch_and_add(&st->wait_hist[b], 1);
		max_u64(&st->wait_max_ns, d->wait_ns);
	}
	st->last_ns = now;
	if (st->window != window_id) {
		st->window = window_id;
		st->window_first_ns = now;
	}
}

static __always_inline void count_port(__u16 lport, struct delta *d)
{
	__u32 key = lport;
	struct port_stats *ps = bpf_map_lookup_elem(&aw_lports, &key);

	if (!ps) {
		struct port_stats init = {};

		bpf_map_update_elem(&aw_lports, &key, &init, BPF_NOEXIST);
		ps = bpf_map_lookup_elem(&aw_lports, &key);
		if (!ps) {
			stat_inc(STAT_PORTS_FULL);
			return;
		}
	}
	if (d->accepted)
		__sync_fetch_and_add(&ps->accepted, 1);
	if (d->not_accepted)
		__sync_fetch_and_add(&ps->not_accepted, 1);
	if (d->synack)
		__sync_fetch_and_add(&ps->synack_retrans, 1);
	if (d->syn)
		__sync_fetch_and_add(&ps->syns, 1);
	if (d->has_wait) {
		__u32 b = wait_bucket(d->wait_ns) & (WAIT_BUCKETS - 1);

		__sync_fetch_and_add(&ps->wait_hist[b], 1);
		max_u64(&ps->wait_max_ns, d->wait_ns);
	}
	if (d->has_backlog) {
		if (d->backlog > ps->backlog_max)
			ps->backlog_max = d->backlog;
		ps->backlog_limit = d->backlog_limit;
	}
}

/* Common to every attach mode: sk is the accepted socket, lsk its listener
 * when the hook knows it (the accepted socket's own port reads 0 once the
 * client has reset it, and only the listener knows its queue). tcp: the
 * caller has checked that sk is a TCP socket. */
static __always_inline void handle_accept(bool direct, bool tcp, struct sock *sk, struct sock *lsk)
{
	if (!sk)
		return;
	if (!tcp && RD(direct, sk, sk_protocol) != IPPROTO_TCP)
		return;

	struct skc c = {};

	if (!load_skc(direct, sk, &c))
		return;
	__u16 lport = lsk ? RD(direct, lsk, __sk_common.skc_num) : 0;

	if (!lport)
		lport = c.num;
	if (!lport)
		/* Past struct sock: not a direct load even where sk has BTF. */
		lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));

	struct addr_key key = {};
	__u8 laddr[16] = {};
	__u8 fam = watched(&c, lport, &key, laddr);

	if (!fam)
		return;

	/* The handshake's entry goes whoever accepted, or a filtered-out
	 * accept would later count as never accepted. */
	__u64 now = bpf_ktime_get_ns();
	struct pending p;
	struct delta d = { .accepted = true };

	if (pending_take((__u64)sk, &p)) {
		d.has_wait = true;
		d.wait_ns = now > p.ts_ns ? now - p.ts_ns : 0;
	}

	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (target_tgid && tgid != target_tgid)
		return;

	__u8 state = c.state;

	/* SYN_RECV: the handshake's softirq is still finishing on another
	 * CPU (the child is queued just before it turns ESTABLISHED). */
	d.gone = state != TCP_ESTABLISHED && state != TCP_SYN_RECV;
	if (lsk) {
		d.has_backlog = true;
		d.backlog = RD(direct, lsk, sk_ack_backlog) + 1;
		d.backlog_limit = RD(direct, lsk, sk_max_ack_backlog);
	}
	count_addr(&key, &d, now);
	count_port(lport, &d);
	if (!emit_events)
		return;

	struct event *e = bpf_ringbuf_reserve(&aw_events, sizeof(*e), 0);

	if (!e) {
		stat_inc(STAT_LOST_EVENTS);
		return;
	}
	e->ts_ns = now;
	e->queue_wait_ns = d.wait_ns;
	__builtin_memcpy(e->laddr, laddr, 16);
	__builtin_memcpy(e->raddr, key.addr, 16);
	e->pid = tgid;
	e->backlog = d.backlog;
	e->backlog_max = d.backlog_limit;
	e->lport = lport;
	e->rport = bpf_ntohs(c.dport);
	e->family = fam;
	e->kind = EVENT_ACCEPT;
	e->state = state;
	e->flags = (d.has_wait ? EVENT_F_WAIT : 0) | (d.has_backlog ? EVENT_F_BACKLOG : 0) |
		   (d.gone ? EVENT_F_GONE : 0);
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	/* Waking the reader per event costs more than the event: wake it only
	 * once enough is queued; it also polls with a short deadline. */
	long flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&aw_events, BPF_RB_AVAIL_DATA) + sizeof(*e) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

/* fexit, kernels before 6.10: inet_csk_accept(sk, flags, err, kern). */
SEC("fexit/inet_csk_accept")
int BPF_PROG(aw_fexit_acc4, struct sock *lsk, int flags, int *err, bool kern, struct sock *ret)
{
	handle_accept(true, false, ret, lsk);
	return 0;
}

/* fexit, 6.10 and later: inet_csk_accept(sk, struct proto_accept_arg *arg). */
SEC("fexit/inet_csk_accept")
int BPF_PROG(aw_fexit_acc2, struct sock *lsk, void *arg, struct sock *ret)
{
	handle_accept(true, false, ret, lsk);
	return 0;
}

static __always_inline void save_listener(struct sock *lsk)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 v = (__u64)lsk;

	if (lsk)
		bpf_map_update_elem(&aw_listeners, &tid, &v, BPF_ANY);
}

static __always_inline struct sock *take_listener(void)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(&aw_listeners, &tid);
	struct sock *lsk;

	if (!v)
		return NULL;
	lsk = (struct sock *)*v;
	bpf_map_delete_elem(&aw_listeners, &tid);
	return lsk;
}

/* kprobe mode: the listener at entry (the first argument in every kernel's
 * signature), the accepted socket at return. */
SEC("kprobe/inet_csk_accept")
int BPF_KPROBE(aw_kprobe_acc, struct sock *lsk)
{
	save_listener(lsk);
	return 0;
}

SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(aw_kretprobe_acc, struct sock *ret)
{
	handle_accept(false, false, ret, take_listener());
	return 0;
}

/* The TCP socket behind a file descriptor, given the task's fd table:
 * fdt->fd[fd]->private_data (struct socket)->sk, or for an MPTCP socket its
 * first subflow, which holds the accept queue and the addresses (an MPTCP
 * listener's own counters stay zero). NULL for anything else. */
static __always_inline struct sock *fd_sock(struct file **fds, unsigned int max_fds, long fd)
{
	struct file *file = NULL;

	if (fd < 0 || fd >= max_fds)
		return NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	struct sock *sk = sock ? BPF_CORE_READ(sock, sk) : NULL;

	if (!sk)
		return NULL;
	__u16 protocol = BPF_CORE_READ(sk, sk_protocol);

	if (protocol == IPPROTO_TCP)
		return sk;
	if (protocol == IPPROTO_MPTCP && bpf_core_field_exists(((struct mptcp_sock *)0)->first))
		return BPF_CORE_READ((struct mptcp_sock *)sk, first);
	return NULL;
}

/* Tracepoint mode, for kernels that allow only tracepoints: the new
 * descriptor is the return value of accept()/accept4(), the listening one
 * their first argument, still in the task's saved registers at exit (5.15+:
 * bpf_task_pt_regs). The task and its fd table are BTF pointers there. */
SEC("tracepoint/syscalls/sys_exit_accept4")
int aw_tp_accept(struct trace_event_raw_sys_exit *ctx)
{
	long fd = ctx->ret;

	if (fd < 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs___kernel *regs = (struct pt_regs___kernel *)bpf_task_pt_regs(task);
	struct fdtable *fdt = task->files->fdt;
	struct file **fds = fdt->fd;
	unsigned int max_fds = fdt->max_fds;

	handle_accept(false, true, fd_sock(fds, max_fds, fd), fd_sock(fds, max_fds, regs->di));
	return 0;
}

/* The same for older kernels: the listening descriptor is kept from the
 * syscall's entry, by thread. */
static __always_inline struct sock *current_fd_sock(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);

	return fd_sock(BPF_CORE_READ(fdt, fd), BPF_CORE_READ(fdt, max_fds), fd);
}

SEC("tracepoint/syscalls/sys_enter_accept4")
int aw_tp_enter_old(struct trace_event_raw_sys_enter *ctx)
{
	save_listener(current_fd_sock(ctx->args[0]));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int aw_tp_accept_old(struct trace_event_raw_sys_exit *ctx)
{
	long fd = ctx->ret;
	struct sock *lsk = take_listener();

	if (fd >= 0)
		handle_accept(false, true, current_fd_sock(fd), lsk);
	return 0;
}

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

	if (!port_watched(lport) || !load_skc(true, sk, &c) || !watched(&c, lport, &key, laddr))
		return 0;

	struct delta d = { .handshake = true };
	__u64 now = bpf_ktime_get_ns();

	count_addr(&key, &d, now);

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

	if (!load_skc(true, sk, &c) || !watched(&c, lport, &key, laddr))
		return 0;
	struct delta d = { .not_accepted = true };

	count_addr(&key, &d, bpf_ktime_get_ns());
	count_port(lport, &d);
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

	if (!port_watched(lport) || !load_skc(true, req, &c) || !watched(&c, lport, &key, laddr))
		return 0;
	struct delta d = { .synack = true };

	count_addr(&key, &d, bpf_ktime_get_ns());
	count_port(lport, &d);
	return 0;
}

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
	struct delta d = { .syn = true };

	count_addr(&key, &d, bpf_ktime_get_ns());
	count_port(lport, &d);
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
