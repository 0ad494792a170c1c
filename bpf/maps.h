// SPDX-License-Identifier: GPL-2.0
/* Knobs, maps and the counters every hook family updates. */
#pragma once

#include "kernel.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "acceptwatch.h"

/* Knobs set by user space before load; the verifier sees them as constants. */
const volatile __u32 target_tgid = 0;     /* 0: every process */
const volatile __u8 target_family = 0;    /* 0, 4 or 6 */
const volatile bool filter_ports = false; /* false: every port */
const volatile bool emit_events = true;   /* false: counters only (--quiet) */
const volatile __u64 wakeup_bytes = 0;    /* wake the reader once this much is queued */
const volatile bool count_addrs = true;   /* false: per-port counters only (metrics without top addresses) */
const volatile __u32 target_netns = 0;    /* 0: every network namespace (else its inode): --netns */
const volatile __u64 target_cgroup = 0;   /* 0: every cgroup, else a cgroup v2 id: --cgroup (its subtree) */
const volatile __u32 target_cgroup_level = 0; /* that cgroup's depth below the root */

/* Bumped by user space at each --interval boundary. */
volatile __u32 window_id = 0;
/* Bumped by user space at each metrics scrape: see port_stats.bl_epoch. */
volatile __u32 backlog_epoch = 0;

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
struct addr_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr_key);
	__type(value, struct addr_stats);
};

/* The address map in use, in slot 0. User space creates the maps: one for
 * the console, two for long runs, where it swaps in the empty one and drains
 * the other. Replacing a slot of a map-in-map returns only once every
 * program that may still hold the old map has finished (the kernel waits for
 * an RCU grace period), so a drained map takes no more updates: no count is
 * lost between the two. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct addr_map);
} aw_addr_slot SEC(".maps");

/* Per listening port, per CPU: every accept updates its port's counters, and
 * one shared copy would bounce between the CPUs' caches. Not preallocated:
 * with its fine histogram an entry is 2 KiB per CPU, and only the ports seen
 * take memory (4096 preallocated would be 8.5 MiB per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct port_key);
	__type(value, struct port_stats);
} aw_lports SEC(".maps");

/* One zeroed port_stats, to create port entries from: too big for the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct port_stats);
} aw_port_zero SEC(".maps");

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

/* A pending entry with ts_ns 0 (bpf_ktime_get_ns() never reads 0) marks a
 * socket already accepted before its handshake hook ran: the child is queued
 * just before it turns ESTABLISHED, so on another CPU fexit and kretprobe can
 * see the accept first. The late handshake then records nothing; without the
 * mark its record would outlive the accept and the socket's destruction would
 * count a connection as never accepted. */
static __always_inline bool pending_is_mark(const struct pending *p)
{
	return p->ts_ns == 0;
}

/* Records a completed handshake of socket sk, unless an accept marked it. */
static __always_inline void pending_put(__u64 sk, __u64 ts, __u16 lport)
{
	struct pending p = { .ts_ns = ts, .lport = lport };

	if (!bpf_map_update_elem(&aw_pending, &sk, &p, BPF_NOEXIST))
		return;

	struct pending *old = bpf_map_lookup_elem(&aw_pending, &sk);

	if (old && pending_is_mark(old)) {
		bpf_map_delete_elem(&aw_pending, &sk);
		return;
	}
	/* A stale record of a reused socket address, or a full table. */
	if (bpf_map_update_elem(&aw_pending, &sk, &p, BPF_ANY))
		stat_inc(STAT_PENDING_FULL);
}

/* Takes the handshake record of socket sk out, if there is one (a mark is
 * taken out too, but is no record). */
static __always_inline bool pending_take(__u64 sk, struct pending *out)
{
	struct pending *p = bpf_map_lookup_elem(&aw_pending, &sk);

	if (!p)
		return false;
	*out = *p;
	bpf_map_delete_elem(&aw_pending, &sk);
	return !pending_is_mark(out);
}

/* An accept found no record of a child still in SYN_RECV: its handshake hook
 * is about to run. Leaves the mark; if the record arrived in between, takes
 * it. A mark the handshake never removes (tracepoint mode sees the accept
 * after the socket is grafted, and then the handshake records nothing) goes
 * when the socket is destroyed. */
static __always_inline bool pending_mark(__u64 sk, struct pending *out)
{
	struct pending mark = {};

	if (!bpf_map_update_elem(&aw_pending, &sk, &mark, BPF_NOEXIST))
		return false;
	return pending_take(sk, out);
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

/* floor(log2(v)) for v > 0, without a loop. */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 b = 0;

	if (v >= 1ULL << 32) { v >>= 32; b += 32; }
	if (v >= 1ULL << 16) { v >>= 16; b += 16; }
	if (v >= 1ULL << 8) { v >>= 8; b += 8; }
	if (v >= 1ULL << 4) { v >>= 4; b += 4; }
	if (v >= 1ULL << 2) { v >>= 2; b += 2; }
	if (v >= 1ULL << 1) b += 1;
	return b;
}

/* An address's log2 bucket of a wait (see ADDR_WAIT_BUCKETS). */
static __always_inline __u32 addr_wait_bucket(__u64 ns)
{
	__u64 us = ns / 1000;
	__u32 b = us ? log2_u64(us) + 1 : 0;

	return b < ADDR_WAIT_BUCKETS ? b : ADDR_WAIT_BUCKETS - 1;
}

/* A port's log-linear bucket of a wait (see PORT_WAIT_BUCKETS). */
static __always_inline __u32 port_wait_bucket(__u64 ns)
{
	const __u32 sub = 1 << PORT_WAIT_SUB_BITS;

	if (ns < 1ULL << PORT_WAIT_MIN_SHIFT)
		return ns >> (PORT_WAIT_MIN_SHIFT - PORT_WAIT_SUB_BITS);
	__u32 e = log2_u64(ns);

	if (e >= PORT_WAIT_MIN_SHIFT + PORT_WAIT_OCTAVES)
		return PORT_WAIT_BUCKETS - 1;
	return sub + (e - PORT_WAIT_MIN_SHIFT) * sub + ((ns >> (e - PORT_WAIT_SUB_BITS)) & (sub - 1));
}

static __always_inline void max_u64(__u64 *dst, __u64 v)
{
	if (v > *dst)
		*dst = v;
}

static __always_inline void min_u64(__u64 *dst, __u64 v)
{
	if (v < *dst)
		*dst = v;
}

/* What one event adds to an address's or a port's counters. */
struct delta {
	bool accepted, handshake, not_accepted, gone, synack, syn, drop, has_wait, has_backlog;
	__u64 wait_ns;
	__u32 backlog, backlog_limit;
};

static __always_inline struct addr_stats *addr_entry(struct addr_key *key, __u64 now)
{
	__u32 slot = 0;
	void *addrs = bpf_map_lookup_elem(&aw_addr_slot, &slot);

	if (!addrs)
		return NULL;
	struct addr_stats *st = bpf_map_lookup_elem(addrs, key);

	if (st)
		return st;
	struct addr_stats init = {
		.first_ns = now,
		.last_ns = now,
		.window_first_ns = now,
		.window = window_id,
		.wait_min_ns = ~0ULL,
	};
	/* NOEXIST: another CPU may have inserted it first; then use theirs. */
	if (!bpf_map_update_elem(addrs, key, &init, BPF_NOEXIST))
		stat_inc(STAT_ADDR_NEW);
	return bpf_map_lookup_elem(addrs, key);
}

/* now is the caller's bpf_ktime_get_ns(): one clock read per event. */
static __always_inline void count_addr(struct addr_key *key, struct delta *d, __u64 now)
{
	if (!count_addrs)
		return;
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
	if (d->drop)
		__sync_fetch_and_add(&st->drops, 1);
	if (d->has_wait) {
		__u32 b = addr_wait_bucket(d->wait_ns);

		if (b < ADDR_WAIT_BUCKETS) /* for the verifier */
			__sync_fetch_and_add(&st->wait_hist[b], 1);
		max_u64(&st->wait_max_ns, d->wait_ns);
		min_u64(&st->wait_min_ns, d->wait_ns);
	}
	st->last_ns = now;
	if (st->window != window_id) {
		st->window = window_id;
		st->window_first_ns = now;
	}
}

/* A count in network namespace netns: every namespace, or the watched one. */
static __always_inline bool netns_watched(__u32 netns)
{
	return !target_netns || netns == target_netns;
}

static __always_inline void count_port(__u32 netns, __u16 lport, struct delta *d)
{
	struct port_key key = { .netns = netns, .port = lport };
	struct port_stats *ps = bpf_map_lookup_elem(&aw_lports, &key);

	if (!ps) {
		__u32 zero = 0;
		struct port_stats *init = bpf_map_lookup_elem(&aw_port_zero, &zero);

		if (init)
			bpf_map_update_elem(&aw_lports, &key, init, BPF_NOEXIST);
		ps = bpf_map_lookup_elem(&aw_lports, &key);
		if (!ps) {
			stat_inc(STAT_PORTS_FULL);
			return;
		}
	}
	if (d->accepted)
		__sync_fetch_and_add(&ps->accepted, 1);
	if (d->handshake)
		__sync_fetch_and_add(&ps->handshakes, 1);
	if (d->not_accepted)
		__sync_fetch_and_add(&ps->not_accepted, 1);
	if (d->gone)
		__sync_fetch_and_add(&ps->gone, 1);
	if (d->synack)
		__sync_fetch_and_add(&ps->synack_retrans, 1);
	if (d->syn)
		__sync_fetch_and_add(&ps->syns, 1);
	if (d->drop)
		__sync_fetch_and_add(&ps->drops, 1);
	if (d->has_wait) {
		__u32 b = port_wait_bucket(d->wait_ns) & (PORT_WAIT_BUCKETS - 1);

		__sync_fetch_and_add(&ps->wait_hist[b], 1);
		__sync_fetch_and_add(&ps->wait_sum_ns, d->wait_ns);
		max_u64(&ps->wait_max_ns, d->wait_ns);
		/* 0 is unset here: a new entry's other CPUs' copies are zeroed. */
		if (!ps->wait_min_ns || d->wait_ns < ps->wait_min_ns)
			ps->wait_min_ns = d->wait_ns ? d->wait_ns : 1;
	}
	if (d->has_backlog) {
		__u32 epoch = backlog_epoch;
		__u32 s = epoch & 1;

		if (d->backlog > ps->backlog_max)
			ps->backlog_max = d->backlog;
		ps->backlog_limit = d->backlog_limit;
		if (ps->bl_epoch[s] != epoch) {
			ps->bl_epoch[s] = epoch;
			ps->bl_max[s] = 0;
		}
		if (d->backlog > ps->bl_max[s])
			ps->bl_max[s] = d->backlog;
	}
}
