/* Types shared by the BPF programs and user space (Go types are generated
 * from these by bpf2go -type, never written by hand). */
#pragma once

/* Queue waits per address: a log2 histogram of microseconds (bucket 0 holds
 * waits under 1 us, bucket i waits in [2^(i-1), 2^i) us, the last one the
 * rest) plus the smallest and largest wait, which narrow the bucket a
 * percentile falls in. Small, because there is one per address. */
#define ADDR_WAIT_BUCKETS 30

/* Queue waits per port: log-linear buckets of nanoseconds, within 3.2 % of
 * every value they hold. Below 2^PORT_WAIT_MIN_SHIFT ns, 2^PORT_WAIT_SUB_BITS
 * linear buckets; then 2^PORT_WAIT_SUB_BITS per power of two, up to
 * 2^(PORT_WAIT_MIN_SHIFT + PORT_WAIT_OCTAVES) ns (36 minutes); the last bucket
 * holds the rest. 512 in all: a power of two, so that an index is masked
 * (older verifiers lose a compared bound when clang reuses a register). */
#define PORT_WAIT_SUB_BITS 4
#define PORT_WAIT_MIN_SHIFT 10
#define PORT_WAIT_OCTAVES 31
#define PORT_WAIT_BUCKETS ((1 << PORT_WAIT_SUB_BITS) * (PORT_WAIT_OCTAVES + 1))

/* One live event in the ring buffer. Addresses are 16 bytes; IPv4 (and IPv4
 * clients of dual-stack listeners) are stored v4-mapped with family 4. */
struct event {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u64 queue_wait_ns; /* handshake to accept; valid with EVENT_F_WAIT */
	__u8 laddr[16];
	__u8 raddr[16];
	__u64 cgroup_id; /* the acceptor's cgroup v2 id (0: none, v1-only) */
	__u32 netns; /* the accepted socket's network namespace (inode) */
	__u32 pid; /* thread group id of the acceptor */
	__u32 backlog; /* listener's queue when taken, this one included */
	__u32 backlog_max; /* listener's limit; valid with EVENT_F_BACKLOG */
	__u16 lport;
	__u16 rport;
	__u8 family; /* 4 or 6 */
	__u8 kind;   /* enum event_kind */
	__u8 state;  /* TCP state of the accepted socket */
	__u8 flags;  /* enum event_flags */
	char comm[16];
};

enum event_kind {
	EVENT_ACCEPT = 1,
};

enum event_flags {
	EVENT_F_WAIT = 1,    /* queue_wait_ns is known */
	EVENT_F_BACKLOG = 2, /* the listener was seen: backlog fields valid */
	EVENT_F_GONE = 4,    /* client had closed or reset before the accept */
};

/* Key of the per-remote-address counters: every count is per network
 * namespace (its inode; 0 where a SYN counter could not tell). */
struct addr_key {
	__u8 addr[16];
	__u32 netns;
};

/* Key of the per-port counters. */
struct port_key {
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

/* The fields every accept and handshake writes come first, together (one
 * cache line): the entry's cache lines move between CPUs, and fewer lines
 * move faster. 216 bytes, as before the minimum wait was added: the map is
 * preallocated, up to a million entries. */
struct addr_stats {
	__u64 accepted;
	__u64 handshakes;
	__u64 last_ns;
	__u64 wait_max_ns;
	__u64 wait_min_ns; /* ~0 until a wait is known */
	__u32 window;
	/* Final ACKs dropped because the accept queue was full (kernels with
	 * the TCP_LISTEN_OVERFLOW drop reason). 32 bits in what was padding:
	 * the map's value is multiplied by --max-addresses. */
	__u32 drops;
	__u64 first_ns;
	/* First event of the current --interval window (window_id in .bss). */
	__u64 window_first_ns;
	__u64 not_accepted;   /* handshake done, socket gone without accept() */
	__u64 gone;           /* accepted after the client closed or reset */
	__u64 synack_retrans; /* SYN-ACKs resent: handshake not completed */
	__u64 syns;           /* SYNs that reached the listener */
	__u32 wait_hist[ADDR_WAIT_BUCKETS];
};

/* Per listening port, per CPU (fields are summed in user space): 2,152 bytes
 * a CPU, allocated for a port when it is first seen (the map is not
 * preallocated). */
struct port_stats {
	__u64 accepted;
	__u64 handshakes;
	__u64 not_accepted;
	__u64 gone;
	__u64 synack_retrans;
	__u64 syns;
	__u64 drops; /* final ACKs dropped: accept queue full */
	__u64 wait_max_ns;
	__u64 wait_min_ns; /* 0 until a wait is known (at least 1 after) */
	__u64 wait_sum_ns;
	__u32 backlog_max; /* most connections queued at one accept */
	__u32 backlog_limit;
	/* The queue's maximum per backlog_epoch (user space ends an epoch at
	 * each metrics scrape): two slots, so the closing epoch's is read while
	 * the next one fills the other; a slot is reset when its epoch changes. */
	__u32 bl_epoch[2];
	__u32 bl_max[2];
	__u32 wait_hist[PORT_WAIT_BUCKETS];
};

/* A completed handshake waiting in an accept queue, by child socket. */
struct pending {
	__u64 ts_ns;
	__u16 lport;
	__u16 _pad[3];
};

/* Indexes into the per-CPU stats array: what could not be recorded. */
enum stat {
	STAT_LOST_EVENTS = 0,       /* ring buffer full: live event dropped */
	STAT_OVERFLOW_ACCEPTS = 1,  /* address map full: accept not attributed */
	STAT_OVERFLOW_HANDSHAKES = 2,
	STAT_OVERFLOW_OTHER = 3,    /* address map full: queue-side counts */
	STAT_PENDING_FULL = 4,      /* pending table full: a queue wait unknown */
	STAT_PORTS_FULL = 5,        /* port table full */
	STAT_ADDR_NEW = 6,          /* addresses added to the address map */
	STAT_MAX = 7,
};
