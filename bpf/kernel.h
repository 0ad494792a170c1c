/* The few kernel types acceptwatch reads, declared with preserve_access_index so
 * that every field access is a CO-RE relocation resolved against the running
 * kernel's BTF at load time. Only the fields used are listed; their order and
 * offsets here do not matter. */
#pragma once

#include <linux/types.h>
#include <asm/ptrace.h> /* struct pt_regs for kretprobe arguments */

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

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
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

struct sk_buff {
	unsigned char *head;
	__u16 network_header;
	__u16 transport_header;
	__be16 protocol;
};

struct socket {
	struct sock *sk;
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

/* The kernel's x86-64 pt_regs (the ___kernel suffix keeps it apart from the
 * UAPI struct of the same name; CO-RE ignores it when matching). */
struct pt_regs___kernel {
	unsigned long di;
};

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
