#!/usr/bin/env python3
"""Group a `perf record --call-graph dwarf` profile of the service by subsystem.

    perf script -i perf.data --no-inline -F comm,tid,ip,sym,dso | python3 bench/perf-subsystems.py

Each sample is put in one bucket, decided on its whole stack: kernel samples by what the
kernel was doing (scheduling/futex, disk write+fsync, loopback TCP, ...), user samples by the
innermost frame that belongs to a known library (SQLite, sqlx, rusqlite, tokio, hyper, ...).
Prints the share of each bucket, overall and per thread kind (tokio workers, the writer, ...).
"""

import re
import sys
from collections import Counter, defaultdict

KERNEL = [
    ("kernel: futex (thread hand-offs between tokio, writer and driver threads)",
     re.compile(r"__x64_sys_futex|futex_wait|futex_wake")),
    ("kernel: epoll_wait (tokio worker parking)", re.compile(r"epoll_wait|epoll_pwait")),
    ("kernel: eventfd writes (tokio waking a parked worker)",
     re.compile(r"eventfd|mio::sys::unix::waker")),
    ("kernel: fsync (durable commits)", re.compile(r"fsync|fdatasync|file_write_and_wait|jbd2")),
    ("kernel: loopback TCP", re.compile(r"tcp_|sock_|sendto|recvfrom|sendmsg|recvmsg|inet_|skb|net_rx")),
    ("kernel: file read/write (WAL, page cache)",
     re.compile(r"pwrite|pread|ext4_|vfs_read|vfs_write|filemap|generic_perform_write|iowrite|blk_")),
    ("kernel: scheduling (other)", re.compile(r"schedule|finish_task_switch|try_to_wake_up|nanosleep")),
    ("kernel: memory (page faults, mmap)",
     re.compile(r"page_fault|do_anonymous|mmap|munmap|madvise|brk|clear_page")),
]

USER = [
    ("malloc/free", re.compile(r"^(_int_malloc|_int_free|malloc|free|cfree|realloc|calloc|malloc_consolidate|unlink_chunk|_int_realloc|tcache|__libc_malloc|__libc_free|sysmalloc|alloc::alloc|__rust_alloc|__rust_dealloc|__rdl_|mi_|_mi_)")),
    ("memcpy/memmove/memcmp", re.compile(r"^__mem(move|cpy|set|cmp)|^mem(cpy|move|set|cmp)")),
    ("SQLite engine", re.compile(r"^(sqlite3|pcache|wal|btree|vdbe|getPage|releaseMem|moveTo|balance|pager|unixSync|unixWrite|unixRead|fillInCell|insertCell|accessPayload|yy|lookupName|resolve|whereLoop|whereShortCut|exprAnalyze|blobSeekToRow)", re.I)),
    ("sqlx driver", re.compile(r"sqlx_")),
    ("rusqlite driver", re.compile(r"rusqlite::")),
    ("flume channels (sqlx <-> its worker thread)", re.compile(r"flume::")),
    ("tracing / logging", re.compile(r"tracing|nu_ansi_term|fmt::format::Format")),
    ("JSON (serde_json, hand-written writers)", re.compile(r"serde_json|threadkeeper::domain::json|threadkeeper::http::views|ObjectWriter|raw_value")),
    ("metrics", re.compile(r"metrics")),
    ("HTTP client (reqwest / hyper-util)", re.compile(r"reqwest|hyper_util::client")),
    ("HTTP server (hyper / axum / tower)", re.compile(r"hyper::|httparse|axum|tower|http::header")),
    ("sha2 / uuid / chrono", re.compile(r"sha2|uuid|chrono")),
    ("threadkeeper (own code)", re.compile(r"threadkeeper::")),
    ("tokio runtime", re.compile(r"tokio::")),
    ("std sync / thread parking", re.compile(r"std::sys::sync|std::thread|park|pthread_mutex|pthread_cond|lock_contended")),
]


def classify(frames):
    """frames: list of (sym, dso), leaf first."""
    if not frames:
        return "unknown"
    leaf_sym, leaf_dso = frames[0]
    if "kernel" in leaf_dso:
        text = " ".join(s for s, _ in frames)
        for name, pattern in KERNEL:
            if pattern.search(text):
                return name
        return "kernel: other (syscall entry/exit, ...)"
    for sym, dso in frames:
        for name, pattern in USER:
            if pattern.search(sym):
                return name
    return "other user code (" + leaf_dso.split("/")[-1] + ")"


def thread_kind(comm):
    if comm.startswith("sqlx-sqlite"):
        return "sqlx worker threads"
    if comm.startswith("threadkeeper-wr"):
        return "writer thread"
    if comm.startswith("threadkeeper-ch"):
        return "checkpoint thread"
    if comm.startswith("tokio"):
        return "tokio worker threads"
    return "other threads"


def samples(lines):
    header, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if header is not None:
                yield header, frames
            header, frames = None, []
            continue
        if not line.startswith((" ", "\t")):
            header, frames = line, []
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
        if m:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
            frames.append((sym, m.group(2)))
    if header is not None:
        yield header, frames


def main():
    total = Counter()
    by_kind = defaultdict(Counter)
    n = 0
    for header, frames in samples(sys.stdin):
        comm = header.split()[0]
        bucket = classify(frames)
        total[bucket] += 1
        by_kind[thread_kind(comm)][bucket] += 1
        n += 1
    if n == 0:
        print("no samples")
        return
    print(f"{n} samples")
    print(f"{'share':>6}  bucket")
    for bucket, count in total.most_common():
        print(f"{100.0 * count / n:5.1f}%  {bucket}")
    for kind, counter in sorted(by_kind.items()):
        k = sum(counter.values())
        print(f"\n{kind}: {100.0 * k / n:.1f}% of samples")
        for bucket, count in counter.most_common(8):
            print(f"  {100.0 * count / n:5.1f}%  {bucket}")


if __name__ == "__main__":
    main()
