#!/usr/bin/env python3
"""Host check: does a large file's fsync stall a small WAL-like fdatasync on the same disk?

Appends 25 kB + fdatasync 1,000 times a second for 5 s (the WAL's pattern at 1,000 spectra/s)
and prints p50, p99 and the worst call, while another thread:
  none   - does nothing;
  burst  - writes three 60 MB files, each with one fsync at the end (a Parquet persist);
  paced  - writes the same files but starts writeback every 1 MB with sync_file_range and waits
           for the previous megabyte (RocksDB's bytes_per_sync), so the final fsync is small.
ext4 commits the big file's dirty data together with the small file's metadata, so on some
disks "burst" stalls the small fdatasync for tens of milliseconds. Linux only.

Usage: python3 benches/peers/fsync_entanglement.py {none|burst|paced} [directory=/tmp]
Needs numpy (e.g. ~/.cache/flowdaq-venv/bin/python).
"""
import ctypes
import os
import sys
import threading
import time

import numpy as np

MB = 1 << 20
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4


def big_writes(mode, directory):
    if mode == "none":
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    time.sleep(1.0)
    chunk = os.urandom(MB)
    for k in range(3):
        path = os.path.join(directory, f"fsync_entanglement_big_{k}.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for i in range(60):
            os.write(fd, chunk)
            if mode == "paced":
                off = i * MB
                libc.sync_file_range(fd, ctypes.c_longlong(off), ctypes.c_longlong(MB), SYNC_FILE_RANGE_WRITE)
                if i > 0:
                    flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
                    libc.sync_file_range(fd, ctypes.c_longlong(off - MB), ctypes.c_longlong(MB), flags)
        os.fsync(fd)
        os.close(fd)
        os.unlink(path)
        time.sleep(0.5)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "burst"
    directory = sys.argv[2] if len(sys.argv) > 2 else "/tmp"
    assert mode in ("none", "burst", "paced"), mode
    writer = threading.Thread(target=big_writes, args=(mode, directory))
    writer.start()
    path = os.path.join(directory, "fsync_entanglement_wal.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    record = os.urandom(24883)
    latencies = []
    start = time.perf_counter()
    for i in range(5000):
        due = start + i / 1000
        while time.perf_counter() < due:
            pass
        t = time.perf_counter()
        os.write(fd, record)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - t)
    writer.join()
    os.close(fd)
    os.unlink(path)
    ms = np.array(latencies) * 1e3
    print(
        f"{mode}: fdatasync p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, "
        f"max {ms.max():.1f} ms; calls above 20 ms: {(ms > 20).sum()}"
    )


if __name__ == "__main__":
    main()
