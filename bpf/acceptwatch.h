/* Types shared by the BPF programs and user space (Go types are generated
 * from these by bpf2go -type, never written by hand). */
#pragma once

/* One live event in the ring buffer. Addresses are 16 bytes; IPv4 (and IPv4
 * clients of dual-stack listeners) are stored v4-mapped with family 4. */
struct event {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u8 laddr[16];
	__u8 raddr[16];
	__u32 pid; /* thread group id of the acceptor */
	__u16 lport;
	__u16 rport;
	__u8 family; /* 4 or 6 */
	__u8 kind;   /* enum event_kind */
	__u8 _pad[2];
	char comm[16];
};

enum event_kind {
	EVENT_ACCEPT = 1,
};

/* Key of the per-remote-address counters. */
struct addr_key {
	__u8 addr[16];
};

struct addr_stats {
	__u64 accepted;
	__u64 handshakes;
	__u64 first_ns;
	__u64 last_ns;
	/* First event of the current --interval window (window_id in .bss). */
	__u64 window_first_ns;
	__u32 window;
	__u32 _pad;
};

/* Indexes into the per-CPU stats array: what could not be recorded. */
enum stat {
	STAT_LOST_EVENTS = 0,       /* ring buffer full: live event dropped */
	STAT_OVERFLOW_ACCEPTS = 1,  /* address map full: accept not attributed */
	STAT_OVERFLOW_HANDSHAKES = 2,
	STAT_MAX = 3,
};
