"""Writes an `acls` file (docs/FORMAT.md) of ~1000 ACLs for the produce
benchmark of docs/BENCHMARKS.md, issue #17: what lets User:ANONYMOUS (the
PLAINTEXT load generator) create and write the `bench` topic — a prefixed
ALL on `bench`, Create and IdempotentWrite on the cluster — among other
principals' literal and prefixed ACLs, group ACLs, and DENYs for other
principals on the very topic written (so a check has neighbours to skip).

    python3 make_acls.py DATA_DIR [COUNT]
"""

import os
import sys

data, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000
lines = [
    "Topic\tPREFIXED\tbench\tUser:ANONYMOUS\t*\tAll\tAllow",
    "Cluster\tLITERAL\tkafka-cluster\tUser:ANONYMOUS\t*\tCreate\tAllow",
    "Cluster\tLITERAL\tkafka-cluster\tUser:ANONYMOUS\t*\tIdempotentWrite\tAllow",
    "Cluster\tLITERAL\tkafka-cluster\tUser:ANONYMOUS\t*\tDescribe\tAllow",
]
i = 0
while len(lines) < count:
    user = f"User:user-{i % 100}"
    k = i % 10
    if k <= 5:
        op = "Read" if i % 2 == 0 else "Write"
        lines.append(f"Topic\tLITERAL\ttopic-{i}\t{user}\t*\t{op}\tAllow")
    elif k <= 7:
        lines.append(f"Topic\tPREFIXED\t{'app' * (1 + i % 4)}-{i}-\t{user}\t*\tWrite\tAllow")
    elif k == 8:
        lines.append(f"Group\tLITERAL\tgroup-{i}\t{user}\t*\tRead\tAllow")
    else:
        pattern = "LITERAL" if i % 20 == 9 else "PREFIXED"
        lines.append(f"Topic\t{pattern}\tbench\tUser:mallory-{i}\t*\tWrite\tDeny")
    i += 1
os.makedirs(data, exist_ok=True)
with open(os.path.join(data, "acls"), "w") as f:
    f.write("".join(sorted(set(l + "\n" for l in lines))))
print(len(set(lines)), "ACLs in", os.path.join(data, "acls"))
