// SPDX-License-Identifier: GPL-2.0
/* Reading IP and TCP headers of a packet (SYNs at the cgroup hook, dropped
 * ACKs at kfree_skb). Offsets are the wire format's, so no kernel or UAPI
 * struct is needed (the UAPI headers would clash with kernel.h). */
#pragma once

#include "maps.h"

#define IP4_HLEN 20 /* without options */
#define IP6_HLEN 40
#define TCP_HLEN 20
#define TCP_FLAGS_OFF 13
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

/* A packet (the caller checked its port) in a watched namespace, from a
 * family acceptwatch reports? Fills key with its source address (IPv4
 * v4-mapped, as everywhere else) and netns. ip is an IPv4 (ver 4) or IPv6
 * header whose fixed part the caller checked. */
static __always_inline bool pkt_watched(const __u8 *ip, __u8 ver, __u32 netns, struct addr_key *key)
{
	if (!netns_watched(netns))
		return false;
	key->netns = netns;
	if (ver == 4) {
		key->addr[10] = key->addr[11] = 0xff;
		__builtin_memcpy(&key->addr[12], ip + 12, 4);
	} else {
		__builtin_memcpy(key->addr, ip + 8, 16);
	}
	return !target_family || target_family == ver;
}

static __always_inline void pkt_count(struct addr_key *key, __u16 lport, struct delta *d)
{
	count_addr(key, d, bpf_ktime_get_ns());
	count_port(key->netns, lport, d);
}
