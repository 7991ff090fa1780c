"""Python transactional producers against a running broker, driven step by
step by crates/sluice/tests/transactions.rs (which checks what became
visible with its own read_committed / read_uncommitted consumers and raw
requests between the steps).

Each mode prints one line per step and, where the test must look at the
broker before the transaction ends, waits for a line "go" on stdin.

txn_clients.py commit-abort CLIENT BROKER TOPIC TXN_ID PARTITIONS COUNT
    CLIENT (confluent-kafka | kafka-python) runs three transactions, each of
    COUNT records (key "k<i>", partition i % PARTITIONS):
      1. values "<CLIENT>-c1-<i>": produced and flushed, then "open" is
         printed and the script waits for "go"; then committed ("committed 1")
      2. values "<CLIENT>-a-<i>": flushed, aborted ("aborted 2")
      3. values "<CLIENT>-c2-<i>": committed ("committed 3")
txn_clients.py offsets CLIENT BROKER IN OUT GROUP TXN_ID
    two transactions that each write one record to OUT-0 and send GROUP's
    offset of IN-0 with send_offsets_to_transaction:
      1. offset 10: "pending 10", wait for "go", commit: "committed 10",
         wait for "go"
      2. offset 20: "pending 20", wait for "go", abort: "aborted 20"
txn_clients.py zombie CLIENT BROKER TOPIC TXN_ID
    a CLIENT producer opens a transaction, writes "zombie-1-<i>"
    (i < 10) to TOPIC-0 and flushes, prints "produced", waits for "go"
    (meanwhile the test starts another producer with the same
    transactional id), writes "zombie-2-<i>" and tries to commit; prints
    "result <json>" with what failed and how.
"""

import json
import sys
import time


def step(line):
    print(line, flush=True)


def wait_go():
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected 'go' on stdin, got {line!r}")


def confluent_producer(broker, txn_id, **extra):
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": broker,
        "transactional.id": txn_id,
        "linger.ms": 5,
    }
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def kafka_python_producer(broker, txn_id):
    from kafka import KafkaProducer

    p = KafkaProducer(
        bootstrap_servers=broker,
        transactional_id=txn_id,
        linger_ms=5,
        max_block_ms=30_000,
    )
    p.init_transactions()
    return p


class Client:
    """The same few calls over either client."""

    def __init__(self, client, broker, txn_id):
        self.client = client
        self.broker = broker
        if client == "confluent-kafka":
            self.p = confluent_producer(broker, txn_id)
        elif client == "kafka-python":
            self.p = kafka_python_producer(broker, txn_id)
        else:
            raise SystemExit(f"unknown client {client}")
        self.futures = []

    def begin(self):
        self.p.begin_transaction()
        self.futures = []

    def send(self, topic, partition, key, value):
        if self.client == "confluent-kafka":
            while True:
                try:
                    self.p.produce(topic, key=key, value=value, partition=partition)
                    return
                except BufferError:
                    self.p.poll(0.1)
        else:
            self.futures.append(self.p.send(topic, key=key, value=value, partition=partition))

    def flush(self):
        if self.client == "confluent-kafka":
            left = self.p.flush(30)
            assert left == 0, f"{left} records not delivered within 30 s"
        else:
            self.p.flush(timeout=30)
            for f in self.futures:
                f.get(timeout=30)  # raises if the broker refused it

    def send_offsets(self, topic, partition, offset, group):
        if self.client == "confluent-kafka":
            from confluent_kafka import Consumer, TopicPartition

            # A consumer that never joins: its group metadata names the
            # group with no generation (the broker takes it as an
            # old-style, unfenced commit).
            c = Consumer({"bootstrap.servers": self.broker, "group.id": group})
            meta = c.consumer_group_metadata()
            self.p.send_offsets_to_transaction([TopicPartition(topic, partition, offset)], meta, 30)
            c.close()
        else:
            from kafka.structs import OffsetAndMetadata, TopicPartition

            self.p.send_offsets_to_transaction(
                {TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)}, group
            )

    def commit(self):
        if self.client == "confluent-kafka":
            self.p.commit_transaction(30)
        else:
            self.p.commit_transaction()

    def abort(self):
        if self.client == "confluent-kafka":
            self.p.abort_transaction(30)
        else:
            self.p.abort_transaction()

    def close(self):
        if self.client == "kafka-python":
            self.p.close(timeout=10)


def commit_abort(client, broker, topic, txn_id, partitions, count):
    c = Client(client, broker, txn_id)

    def write(tag):
        for i in range(count):
            c.send(topic, i % partitions, f"k{i}".encode(), f"{client}-{tag}-{i}".encode())
        c.flush()

    c.begin()
    write("c1")
    step("open")
    wait_go()
    c.commit()
    step("committed 1")

    c.begin()
    write("a")
    c.abort()
    step("aborted 2")

    c.begin()
    write("c2")
    c.commit()
    step("committed 3")
    c.close()


def offsets(client, broker, in_topic, out_topic, group, txn_id):
    c = Client(client, broker, txn_id)
    for offset, commit in ((10, True), (20, False)):
        c.begin()
        c.send(out_topic, 0, b"o", f"{client}-offsets-{offset}".encode())
        c.send_offsets(in_topic, 0, offset, group)
        c.flush()
        step(f"pending {offset}")
        wait_go()
        if commit:
            c.commit()
            step(f"committed {offset}")
            wait_go()
        else:
            c.abort()
            step(f"aborted {offset}")
    c.close()


def zombie(client, broker, topic, txn_id):
    if client == "kafka-python":
        return zombie_kafka_python(broker, topic, txn_id)
    from confluent_kafka import KafkaException

    errors = []
    p = confluent_producer(
        broker,
        txn_id,
        error_cb=lambda e: errors.append({"code": e.name(), "fatal": e.fatal(), "str": e.str()}),
    )
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=b"z", value=f"zombie-1-{i}".encode(), partition=0)
    assert p.flush(30) == 0
    step("produced")
    wait_go()
    result = {"stage": None}
    try:
        for i in range(10):
            p.produce(topic, key=b"z", value=f"zombie-2-{i}".encode(), partition=0)
        p.flush(10)
        p.commit_transaction(30)
        result["stage"] = "committed"
    except KafkaException as e:
        err = e.args[0]
        result.update(
            stage="commit",
            code=err.name(),
            fatal=err.fatal(),
            retriable=err.retriable(),
            txn_requires_abort=err.txn_requires_abort(),
            str=err.str(),
        )
    # Give the error callback a moment to be served.
    p.poll(0.5)
    result["error_cb"] = errors
    step("result " + json.dumps(result))


def zombie_kafka_python(broker, topic, txn_id):
    from kafka.errors import KafkaError

    p = kafka_python_producer(broker, txn_id)
    p.begin_transaction()
    futures = [
        p.send(topic, key=b"z", value=f"zombie-1-{i}".encode(), partition=0) for i in range(10)
    ]
    p.flush(timeout=30)
    for f in futures:
        f.get(timeout=30)
    step("produced")
    wait_go()
    result = {"stage": None}
    try:
        for i in range(10):
            p.send(topic, key=b"z", value=f"zombie-2-{i}".encode(), partition=0)
        p.flush(timeout=10)
        p.commit_transaction()
        result["stage"] = "committed"
    except KafkaError as e:
        # kafka-python has no fatal flag: its fencing errors are the fatal
        # ones by type.
        result.update(stage="commit", code=type(e).__name__, str=str(e))
        # What the producer says once it has settled: the epoch bump it
        # may be doing after INVALID_PRODUCER_EPOCH is refused too.
        time.sleep(1)
        try:
            p.abort_transaction()
            result["abort"] = "aborted"
        except KafkaError as e:
            result.update(abort=type(e).__name__, abort_str=str(e))
    step("result " + json.dumps(result))
    p.close(timeout=5)


def main():
    mode = sys.argv[1]
    if mode == "commit-abort":
        client, broker, topic, txn_id, partitions, count = sys.argv[2:8]
        commit_abort(client, broker, topic, txn_id, int(partitions), int(count))
    elif mode == "offsets":
        client, broker, in_topic, out_topic, group, txn_id = sys.argv[2:8]
        offsets(client, broker, in_topic, out_topic, group, txn_id)
    elif mode == "zombie":
        client, broker, topic, txn_id = sys.argv[2:6]
        zombie(client, broker, topic, txn_id)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
