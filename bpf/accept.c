// SPDX-License-Identifier: GPL-2.0
/* The accept hooks, one family per attach mode (user space loads only the
 * mode it chose): fexit, kprobe + kretprobe, and the accept syscalls'
 * tracepoints. All of them end in handle_accept(). */
#include "sock.h"

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
	__u8 fam = watched(direct, sk, sk, &c, lport, &key, laddr);

	if (!fam)
		return;

	/* The handshake's entry goes whoever accepted, or a filtered-out
	 * accept would later count as never accepted. */
	__u64 now = bpf_ktime_get_ns();
	struct pending p;
	struct delta d = { .accepted = true };

	if (pending_take((__u64)sk, &p) || (c.state == TCP_SYN_RECV && pending_mark((__u64)sk, &p))) {
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
	count_port(key.netns, lport, &d);
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
	e->netns = key.netns;
	e->cgroup_id = bpf_get_current_cgroup_id();
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

/* From 6.2 the bpf_rdonly_cast() kfunc turns a kernel address into a BTF
 * pointer, whose fields load directly (the JIT makes them fault-safe loads)
 * where each step costs a bpf_probe_read_kernel() call without it: 13 calls
 * per accept become 2 (the fd table slots, which are not structs). */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

#define CAST(type, p) ((type *)bpf_rdonly_cast((void *)(p), bpf_core_type_id_kernel(type)))

/* The TCP socket behind a file descriptor, given the task's fd table:
 * fdt->fd[fd]->private_data (struct socket)->sk, or for an MPTCP socket its
 * first subflow, which holds the accept queue and the addresses (an MPTCP
 * listener's own counters stay zero). NULL for anything else. cast is a
 * constant at each call site: the program holds one form only. */
static __always_inline struct sock *fd_sock(bool cast, struct file **fds, unsigned int max_fds, long fd)
{
	struct file *file = NULL;

	if (fd < 0 || fd >= max_fds)
		return NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	struct socket *sock = cast ? CAST(struct socket, CAST(struct file, file)->private_data) :
				     BPF_CORE_READ(file, private_data);
	struct sock *sk = sock ? RD(cast, sock, sk) : NULL;

	if (!sk)
		return NULL;
	__u16 protocol = RD(cast, sk, sk_protocol);

	if (protocol == IPPROTO_TCP)
		return sk;
	if (protocol != IPPROTO_MPTCP || !bpf_core_type_exists(struct mptcp_sock) ||
	    !bpf_core_field_exists(((struct mptcp_sock *)0)->first))
		return NULL;
	return cast ? CAST(struct mptcp_sock, sk)->first : BPF_CORE_READ((struct mptcp_sock *)sk, first);
}

/* Tracepoint mode, for kernels that allow only tracepoints: the new
 * descriptor is the return value of accept()/accept4(), the listening one
 * their first argument, still in the task's saved registers at exit (5.15+:
 * bpf_task_pt_regs). The task and its fd table are BTF pointers there. */
static __always_inline void tp_accept(bool cast, struct trace_event_raw_sys_exit *ctx)
{
	long fd = ctx->ret;

	if (fd < 0)
		return;
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct fdtable *fdt = task->files->fdt;
	struct file **fds = fdt->fd;
	unsigned int max_fds = fdt->max_fds;

	handle_accept(cast, true, fd_sock(cast, fds, max_fds, fd),
		      fd_sock(cast, fds, max_fds, SYSCALL_ARG1(regs)));
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int aw_tp_accept(struct trace_event_raw_sys_exit *ctx)
{
	tp_accept(false, ctx);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int aw_tp_accept_btf(struct trace_event_raw_sys_exit *ctx)
{
	tp_accept(true, ctx);
	return 0;
}

/* The same for older kernels: the listening descriptor is kept from the
 * syscall's entry, by thread. */
static __always_inline struct sock *current_fd_sock(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);

	return fd_sock(false, BPF_CORE_READ(fdt, fd), BPF_CORE_READ(fdt, max_fds), fd);
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
