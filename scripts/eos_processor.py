"""An exactly-once consume-transform-produce processor (confluent-kafka),
run as its own process by crates/sluice/tests/eos.rs so that it can be
SIGKILLed at any moment.

eos_processor.py BROKERS IN OUT GROUP TXN_ID N [RATE]

Reads IN as a (static) member of GROUP with isolation.level=read_committed
and no auto-commit; for each record with value "<i>" writes "out-<i>"
(same key, same partition number) to OUT inside a transaction, and sends
the consumer's positions to the same transaction with
send_offsets_to_transaction, committing about every 100 records or 100 ms,
and (with RATE > 0) at most RATE records a second, so that a test's kills
land while there is work left.

- An abortable error: abort the transaction, seek every partition back to
  its committed offset, go on.
- A retriable error: call the same function again.
- A fatal error (fenced, ...): print it, exit 2.
- Done when the committed offsets of every IN partition are its end (the
  ends must add up to N, the records the test wrote): print "done", exit 0.

Progress lines on stdout: "ready <committed offsets>" once it owns every
partition, "commit <records in this transaction> <sum of committed
offsets>" after each commit, "abort <why>" after each abort.
"""

import faulthandler
import os
import signal
import sys
import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

TXN_RECORDS = 100
TXN_SECONDS = 0.1
# Records taken from the consumer at a time.
CHUNK = 20
TIMEOUT = 30


def say(line):
    print(line, flush=True)


def fatal(what, err):
    say(f"fatal {what}: {err}")
    sys.exit(2)


class Aborted(Exception):
    pass


def call(what, fn, any_error=False):
    """fn() until it succeeds; retriable errors (with any_error, every
    error but a fatal one: for the consumer's look-ups while a broker
    restarts) are retried, an abortable one raises Aborted, a fatal one
    exits."""
    tries = 0
    while True:
        try:
            return fn()
        except KafkaException as e:
            err = e.args[0]
            if err.fatal():
                fatal(what, err)
            if err.txn_requires_abort():
                raise Aborted(f"{what}: {err}")
            transient = (KafkaError._TIMED_OUT, KafkaError._TRANSPORT)
            if any_error or err.retriable() or err.code() in transient:
                say(f"retry {what}: {err}")
                tries += 1
                if tries > 200:
                    fatal(f"{what} still failing after {tries} tries", err)
                time.sleep(0.05)
                continue
            fatal(what, err)


def main():
    # SIGUSR1: every thread's Python stack on stderr (the test asks for it
    # when the processor stalls).
    faulthandler.register(signal.SIGUSR1)
    brokers, in_topic, out_topic, group, txn_id, n = sys.argv[1:7]
    n = int(n)
    rate = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    # SLUICE_EOS_DEBUG: librdkafka debug contexts for the producer
    # (e.g. "eos,protocol"), on stderr.
    debug = {"debug": os.environ["SLUICE_EOS_DEBUG"]} if os.environ.get("SLUICE_EOS_DEBUG") else {}
    # SLUICE_EOS_CONSUMER_DEBUG: the same for the consumer.
    cdebug = os.environ.get("SLUICE_EOS_CONSUMER_DEBUG")
    cdebug = {"debug": cdebug} if cdebug else {}
    common = {
        "bootstrap.servers": brokers,
        # No re-bootstrap when every known broker is down (a one-broker
        # test restarting its broker): after one, librdkafka 2.16's
        # producer sent AddOffsetsToTxn but never the TxnOffsetCommit that
        # send_offsets_to_transaction goes on to, and blocked past its
        # timeout (its group-coordinator request never left the client).
        "metadata.recovery.strategy": "none",
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 500,
        "topic.metadata.refresh.interval.ms": 2000,
    }
    producer = Producer(
        {
            **common,
            **debug,
            "transactional.id": txn_id,
            "transaction.timeout.ms": 60_000,
            "linger.ms": 5,
            "error_cb": lambda e: e.fatal() and say(f"fatal error_cb: {e}"),
        }
    )
    # Fences the previous incarnation and aborts (or completes) its open
    # transaction before anything else.
    call("init_transactions", lambda: producer.init_transactions(TIMEOUT))

    # "assigned": the current assignment; "rebalanced": set by every
    # assignment change after the first, until the main loop has dealt
    # with it; "open": a transaction has begun; "pending": its records.
    state = {"assigned": [], "rebalanced": False, "open": False, "pending": 0}
    setup = [True]

    def abort(why):
        if state["open"]:
            call("abort_transaction", lambda: producer.abort_transaction(TIMEOUT))
            state["open"] = False
        state["pending"] = 0
        say(f"abort {why}")

    def on_assign(consumer, partitions):
        state["assigned"] = [TopicPartition(p.topic, p.partition) for p in partitions]
        if not setup[0]:
            state["rebalanced"] = True

    def on_revoke(consumer, partitions):
        # What the open transaction read from them is read again by whoever
        # gets them next, from the committed offsets: it must not commit.
        state["assigned"] = []
        state["rebalanced"] = True

    consumer = Consumer(
        {
            **common,
            **cdebug,
            "group.id": group,
            "group.instance.id": f"{group}-member",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 500,
            "error_cb": lambda e: e.fatal() and say(f"fatal consumer error_cb: {e}"),
        }
    )
    consumer.subscribe([in_topic], on_assign=on_assign, on_revoke=on_revoke)

    # Every partition assigned, and their ends.
    partitions = None
    deadline = time.time() + 120
    while partitions is None:
        if time.time() > deadline:
            fatal("assignment", "no assignment within 120 s")
        for m in consumer.consume(num_messages=1, timeout=0.2) or []:
            if m.error() is None:
                # Not ours to process before we know where we are: go back.
                consumer.seek(TopicPartition(m.topic(), m.partition(), m.offset()))
        if state["assigned"]:
            partitions = sorted(state["assigned"], key=lambda tp: tp.partition)
    ends = {}
    for tp in partitions:
        ends[tp.partition] = call(
            "watermarks",
            lambda tp=tp: consumer.get_watermark_offsets(tp, TIMEOUT, cached=False),
            any_error=True,
        )[1]
    if sum(ends.values()) != n:
        fatal("input", f"the ends of {in_topic} {ends} add up to {sum(ends.values())}, not {n}")

    def committed_offsets():
        got = call("committed", lambda: consumer.committed(partitions, TIMEOUT), any_error=True)
        return {tp.partition: max(tp.offset, 0) for tp in got}

    committed = committed_offsets()
    say(f"ready {committed}")

    def finished():
        return all(committed[p] >= ends[p] for p in ends)

    def rewind():
        # Back to what the group has committed: everything after it was in
        # an aborted transaction.
        nonlocal committed
        committed = committed_offsets()
        for tp in partitions:
            off = committed[tp.partition]
            target = TopicPartition(tp.topic, tp.partition, off if off > 0 else OFFSET_BEGINNING)
            for attempt in range(100):
                try:
                    consumer.seek(target)
                    break
                except KafkaException as e:
                    if attempt == 99:
                        fatal("seek", e.args[0])
                    time.sleep(0.05)

    def after_rebalance():
        # The assignment changed under the open transaction (a coordinator
        # lost the group, say): abort it, wait to own every partition
        # again, and go back to the committed offsets.
        abort("rebalance")
        deadline = time.time() + 120
        while True:
            state["rebalanced"] = False
            if sorted(tp.partition for tp in state["assigned"]) == sorted(ends):
                break
            if time.time() > deadline:
                fatal("assignment", f"{state['assigned']} after a rebalance, for 120 s")
            consumer.consume(num_messages=100, timeout=0.1)  # dropped: rewound below
        rewind()

    def commit():
        positions = [
            tp for tp in consumer.position(partitions) if tp.offset >= 0
        ]
        meta = consumer.consumer_group_metadata()
        call(
            "send_offsets_to_transaction",
            lambda: producer.send_offsets_to_transaction(positions, meta, TIMEOUT),
        )
        call("commit_transaction", lambda: producer.commit_transaction(TIMEOUT))
        state["open"] = False
        for tp in positions:
            committed[tp.partition] = tp.offset
        say(f"commit {state['pending']} {sum(committed.values())}")
        state["pending"] = 0

    setup[0] = False
    if state["rebalanced"]:
        after_rebalance()
    started = time.time()
    last_commit = time.time()
    idle_said = 0.0
    while not finished():
        idle = time.time() - last_commit
        if idle - idle_said >= 5:
            # Nothing committed for a while: say where it stands.
            idle_said = idle
            positions = {tp.partition: tp.offset for tp in consumer.position(partitions)}
            say(
                f"idle {idle:.0f}s: open {state['open']} pending {state['pending']} "
                f"positions {positions} committed {committed} assigned "
                f"{[tp.partition for tp in state['assigned']]}"
            )
        try:
            if not state["open"]:
                call("begin_transaction", producer.begin_transaction)
                state["open"] = True
                state["pending"] = 0
                started = time.time()
            batch = consumer.consume(num_messages=CHUNK, timeout=0.05)
            if state["rebalanced"]:
                # The batch may hold records of the old assignment, or of
                # the new one from positions that are about to be rewound.
                after_rebalance()
                continue
            for m in batch:
                if m.error() is not None:
                    if m.error().fatal():
                        fatal("consume", m.error())
                    continue
                value = b"out-" + m.value()
                while True:
                    try:
                        producer.produce(out_topic, key=m.key(), value=value, partition=m.partition())
                        break
                    except BufferError:
                        producer.poll(0.05)
                state["pending"] += 1
            producer.poll(0)
            pending = state["pending"]
            if rate > 0 and pending:
                # Pace inside the transaction (its records trickle out to
                # the broker meanwhile): no more than RATE a second.
                time.sleep(max(0.0, min(pending / rate - (time.time() - started), TXN_SECONDS)))
            if pending and (pending >= TXN_RECORDS or time.time() - started >= TXN_SECONDS):
                commit()
                last_commit = time.time()
                idle_said = 0.0
        except Aborted as e:
            abort(e)
            rewind()
    if state["open"]:
        # An empty transaction left from the last turn.
        call("abort_transaction", lambda: producer.abort_transaction(TIMEOUT))
    say(f"done {committed}")
    consumer.close()


if __name__ == "__main__":
    main()
