/* The few kernel types acceptwatch reads, declared with preserve_access_index so
 * that every field access is a CO-RE relocation resolved against the running
 * kernel's BTF at load time. Only the fields used are listed; their order and
 * offsets here do not matter. */
#pragma once

#include <linux/types.h>

typedef _Bool bool;
#define true 1
#define false 0

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_MPTCP 262

/* enum tcp_state values are ABI (they appear in tracepoint output). */
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4]; /* aligns the struct: 4-byte loads, not 16 of one byte */
	} in6_u;
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	possible_net_t skc_net;
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

/* A socket's cgroup v2 (5.15+: a struct cgroup * first; before, a u64 that
 * holds that pointer unless one of its two low bits is set: then net_cls or
 * net_prio data sits there, and the socket counts as in the root). Only its
 * offset is used (sk_cgroup() in sock.h reads its first 8 bytes). */
struct sock_cgroup_data {
	__u64 val;
};

struct sock {
	struct sock_common __sk_common;
	struct sock_cgroup_data sk_cgrp_data;
	__u16 sk_protocol;
	__u16 sk_type;
	__u32 sk_ack_backlog;
	__u32 sk_max_ack_backlog;
	struct socket *sk_socket; /* set when accept() takes the socket */
};

struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

/* An MPTCP socket: TCP work (listening, the handshake) happens on its first
 * subflow. Go listens with MPTCP by default since 1.24. */
struct mptcp_sock {
	struct sock *first;
};

struct net_device {
	possible_net_t nd_net;
};

struct sk_buff {
	struct net_device *dev;
	unsigned char *head;
	__u16 network_header;
	__u16 transport_header;
	__be16 protocol;
};

struct socket {
	struct sock *sk;
};

struct kernfs_node {
	__u64 id; /* a cgroup's id (5.5+) */
};

struct cgroup {
	struct kernfs_node *kn;
	int level; /* the root's is 0 */
};

/* A cgroup's ancestors, itself included, indexed by level: their ids before
 * 6.0, pointers to them from 6.0 on (one of the two exists). */
struct cgroup___ids {
	int level;
	__u64 ancestor_ids[];
};

struct cgroup___ptrs {
	int level;
	struct cgroup *ancestors[];
};

struct file {
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	struct files_struct *files;
};

/* Registers, per architecture (bpf2go -target defines __TARGET_ARCH_<arch>).
 * bpf_tracing.h's kprobe macros (BPF_KPROBE, BPF_KRETPROBE) read arguments
 * and return values from the registers declared here, and SYSCALL_ARG1(regs)
 * is the first argument of the task's syscall, still right at its exit.
 * A target without a block here does not build. */
#if defined(__TARGET_ARCH_x86)
/* As vmlinux.h does: bpf_tracing.h then uses the kernel's field names. */
#define __VMLINUX_H__
struct pt_regs {
	unsigned long di, si, dx, cx, r8, r10, ax, bp, sp, ip;
};
/* The return value goes to ax; di keeps the first argument. */
#define SYSCALL_ARG1(regs) ((regs)->di)
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
	__u64 orig_x0;
};
/* x0 takes the return value; the entry code keeps the first argument in
 * orig_x0. */
#define SYSCALL_ARG1(regs) ((regs)->orig_x0)
#else
#error "bpf/kernel.h: no register layout for this __TARGET_ARCH: add one here"
#endif

struct trace_entry {
	unsigned short type;
};

/* Contexts of the classic syscalls:sys_enter_* and sys_exit_* tracepoints. */
struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
};

#pragma clang attribute pop

#if defined(__TARGET_ARCH_arm64)
/* What bpf_tracing.h reads kprobe registers as on arm64: the start of the
 * kernel's pt_regs, fixed by the ABI (bpf_user_pt_regs_t). */
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#endif
