#!/usr/bin/env python3
"""Test data for benchmarks/compare.sh: the upstream zone, the blocklists in each server's
format, and the dnsperf query files. Deterministic (fixed seeds), so runs are comparable.

  gen.py common OUT QUERIES     zone for NSD; cached/unique query files
  gen.py list   OUT N QUERIES   N-entry blocklist for every server; blocked and mix query files

QUERIES is the number of lines in each large query file: it should exceed the highest rate a
server reaches times the run length, so that the unique path really stays unique (dnsperf starts
the file over when it reaches the end). compare.sh prints a warning when a run wrapped around.

Names:
  blocked   c<i>.grp<i % 997>.bad                      i < N (nested: the 1k list is in the 1M list)
  zone      benchzone.  w0 … w9999 explicit A records, and a wildcard *.benchzone. A, so any
            name under it resolves (unique names are answered from the wildcard).
"""
import os
import random
import sys

ZONE = "benchzone"
EXPLICIT = 10_000        # explicit A records in the zone
CACHED_NAMES = 1_000     # the "repeated allowed names" working set
MIX_UNIVERSE = 1_000_000 # distinct allowed names the Zipf-like mix draws from
MIX_EXPONENT = 1.0       # Zipf exponent s: weight of rank r is 1 / r^s
MIX_BLOCKED = 0.05       # share of blocked names in the mix


def blocked_name(i):
    return f"c{i}.grp{i % 997}.bad"


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines))
        f.write("\n")


def common(out, queries):
    os.makedirs(f"{out}/nsd", exist_ok=True)
    os.makedirs(f"{out}/queries", exist_ok=True)
    # Long TTLs so no cache entry expires during a run.
    zone = [
        f"$ORIGIN {ZONE}.",
        "$TTL 86400",
        "@ IN SOA ns.benchzone. hostmaster.benchzone. 1 3600 600 864000 86400",
        "@ IN NS ns",
        "ns IN A 127.0.0.1",
        "* IN A 192.0.2.1",
    ]
    zone += [f"w{i} IN A 198.18.{(i >> 8) & 255}.{i & 255}" for i in range(EXPLICIT)]
    write_lines(f"{out}/nsd/{ZONE}.zone", zone)

    # Cache hits: a small working set of names, repeated over and over.
    write_lines(f"{out}/queries/cached.txt", [f"w{i}.{ZONE} A" for i in range(CACHED_NAMES)])

    # Cache misses: every name distinct, answered by the upstream's wildcard. Two files with
    # different prefixes: one for the throughput run and one for the latency run, so the second
    # does not hit what the first put in the cache.
    rnd = random.Random(11)
    for tag, prefix in (("unique", "u"), ("unique-lat", "l")):
        write_lines(f"{out}/queries/{tag}.txt",
                    [f"{prefix}{i}-{rnd.getrandbits(32):08x}.{ZONE} A" for i in range(queries)])


def zipf_names(rnd, k):
    """k names drawn from MIX_UNIVERSE with weights 1/r^s (rank 1 is the most popular)."""
    cum, total = [], 0.0
    for r in range(1, MIX_UNIVERSE + 1):
        total += 1.0 / r ** MIX_EXPONENT
        cum.append(total)
    ranks = rnd.choices(range(MIX_UNIVERSE), cum_weights=cum, k=k)
    return [f"w{r}.{ZONE}" for r in ranks]


def blocked_query(rnd, n):
    """A name on an n-entry list: half exact, half a subdomain of a listed name."""
    i = rnd.randrange(n)
    if rnd.random() < 0.5:
        return blocked_name(i)
    return f"x{rnd.getrandbits(24):x}.{blocked_name(i)}"


def blocklist(out, n, queries):
    d = f"{out}/lists/{n}"
    os.makedirs(f"{d}/sinkhole", exist_ok=True)
    names = [blocked_name(i) for i in range(n)]
    # sinkhole: a directory with one plain domain list (a listed name blocks its subdomains).
    # dnsdist reads the same file from Lua into a SuffixMatchNode.
    write_lines(f"{d}/sinkhole/list.txt", ["# synthetic benchmark list"] + names)
    # Unbound: always_nxdomain local zones (a local zone covers its subdomains).
    write_lines(f"{d}/unbound-blocklist.conf", [f'local-zone: "{x}." always_nxdomain' for x in names])
    # dnsmasq: address=/name/ with no address answers NXDOMAIN for the name and its subdomains.
    write_lines(f"{d}/dnsmasq-blocklist.conf", [f"address=/{x}/" for x in names])

    rnd = random.Random(n)
    write_lines(f"{d}/blocked.txt", [f"{blocked_query(rnd, n)} A" for _ in range(100_000)])

    # Realistic mix: 5% blocked, 95% allowed names with Zipf-like popularity. Two files (throughput
    # and latency runs) from different seeds: the popular head overlaps, as it would in real life.
    for tag, seed in (("mix", 1), ("mix-lat", 2)):
        rnd = random.Random(seed * 1_000_003 + n)
        allowed = zipf_names(rnd, queries)
        lines = [f"{blocked_query(rnd, n)} A" if rnd.random() < MIX_BLOCKED else f"{a} A"
                 for a in allowed]
        write_lines(f"{d}/{tag}.txt", lines)
        if tag == "mix":
            first = len(set(allowed)) / len(allowed)
            print(f"mix: {MIX_BLOCKED:.0%} blocked; {first:.0%} of allowed queries are a name's "
                  f"first occurrence (cache misses on a cold cache), over {queries:,} queries")


if __name__ == "__main__":
    if sys.argv[1] == "common":
        common(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "list":
        blocklist(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
