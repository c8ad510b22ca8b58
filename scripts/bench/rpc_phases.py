#!/usr/bin/env python3
"""Phases of the pipelined Neo RPC cycle, from a light syscall trace of rpc_bench.

    B=target/release/examples/rpc_bench
    perf record -e syscalls:sys_enter_sendto,syscalls:sys_exit_recvfrom,\\
    syscalls:sys_enter_futex,syscalls:sys_exit_futex,syscalls:sys_exit_epoll_wait \\
        -- $B --json --systems neo --sequential 10 --pipelined 400000
    perf script -F tid,time,event,trace | scripts/bench/rpc_phases.py

Prints the commonest transitions between consecutive events with their median and
mean gap in µs. Events: M = the calling thread (the process's first thread), W = a
runtime worker; send1 / sendN = a write of one frame / of several (126-byte frames:
the benchmark's 100-byte payload plus the 26-byte header), recv = a read that got
data, fwait / fwake = futex wait / wake, fret = the calling thread back from a futex
wait, epollret = a worker back from epoll_wait. The first third of the trace (set-up
and warm-up) is skipped. Used for docs/BENCHMARKS.md ("One cycle, phase by phase").
"""
import collections
import statistics
import sys

FRAME_BYTES = 126


def events(lines):
    rows = [line.split() for line in lines if line.strip()]
    main = min(int(r[0]) for r in rows)
    for r in rows:
        tid, at, name = int(r[0]), float(r[1].rstrip(":")) * 1e6, r[2].split(":")[1]
        who = "M" if tid == main else "W"
        if name == "sys_enter_sendto":
            frames = int(r[r.index("len:") + 1].rstrip(","), 16) // FRAME_BYTES
            yield at, who + ("send1" if frames == 1 else "sendN")
        elif name == "sys_exit_recvfrom":
            if int(r[-1], 16) < 1 << 63:  # not an error (-EAGAIN)
                yield at, who + "recv"
        elif name == "sys_enter_futex":
            op = int(r[r.index("op:") + 1].rstrip(","), 16) & 0x7F
            yield at, who + ("fwait" if op == 9 else "fwake")
        elif name == "sys_exit_futex" and who == "M":
            yield at, "Mfret"
        elif name == "sys_exit_epoll_wait":
            yield at, "Wepollret"


def main():
    trace = list(events(sys.stdin))
    trace = trace[len(trace) // 3:]
    gaps = collections.defaultdict(list)
    for (t0, a), (t1, b) in zip(trace, trace[1:]):
        gaps[f"{a} -> {b}"].append(t1 - t0)
    for name, values in sorted(gaps.items(), key=lambda kv: -len(kv[1]))[:14]:
        print(f"{name:24s} n={len(values):6d} median={statistics.median(values):5.1f} "
              f"mean={statistics.mean(values):5.1f}")


if __name__ == "__main__":
    main()
