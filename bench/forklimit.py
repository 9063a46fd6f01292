"""The fork limit: how many children a second a warm Python process can fork,
hand one message over a pipe, and reap, at a given concurrency.

No job system does less per child, so this is the ceiling of any design
that runs each job in a fresh process on this machine. Run as
``python -m bench.forklimit COUNT [CONCURRENCY]`` in its own small process
(the bench's own process holds far more memory, which every fork copies
the page tables of); it prints one JSON line: jobs/s and CPU ms per child,
the parent's and the children's, and the children's minor page faults.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def run(count: int, concurrency: int = 2) -> dict[str, float]:
    live: set[int] = set()
    started = done = 0
    before = time.perf_counter()
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    while done < count:
        while len(live) < concurrency and started < count:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: its one message, then out
                os.close(w)
                os.read(r, 64)
                os._exit(0)
            os.close(r)
            os.write(w, b"job")
            os.close(w)
            live.add(pid)
            started += 1
        pid, _ = os.wait()
        live.discard(pid)
        done += 1
    elapsed = time.perf_counter() - before
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)

    def ms(a: resource.struct_rusage, b: resource.struct_rusage) -> float:
        return (b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) * 1000 / count

    return {
        "jobs_per_s": count / elapsed,
        "parent_ms": ms(own, own_after),
        "child_ms": ms(kids, kids_after),
        "child_faults": (kids_after.ru_minflt - kids.ru_minflt) / count,
    }


if __name__ == "__main__":
    count = int(sys.argv[1])
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    run(min(count, 50), concurrency)  # warm up: the first forks fault in more
    print(json.dumps(run(count, concurrency)))
