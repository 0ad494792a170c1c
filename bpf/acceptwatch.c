// SPDX-License-Identifier: GPL-2.0
/* acceptwatch: one BPF object. User space loads only the programs of the
 * attach mode it chose, plus those every mode uses. Each hook family has a
 * file of its own, included here so that they share one set of maps. */

#include "maps.h"

char LICENSE[] SEC("license") = "GPL";

/* Keep the shared types in BTF so that bpf2go generates their Go mirrors. */
const struct event *unused_event __attribute__((unused));
const struct port_stats *unused_port_stats __attribute__((unused));
const struct addr_key *unused_addr_key __attribute__((unused));
const struct port_key *unused_port_key __attribute__((unused));
const struct addr_stats *unused_addr_stats __attribute__((unused));
const enum stat *unused_stat __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum event_flags *unused_event_flags __attribute__((unused));

#include "accept.c"
#include "tcp.c"
#include "syn.c"
#include "skb.c"
#include "drop.c"
