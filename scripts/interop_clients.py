"""Python Kafka clients against a running broker.

interop_clients.py BROKER CLIENT TOPIC
    produce and consume 10,000 messages over 3 partitions with one client
    (CLIENT: kafka-python | confluent-kafka) and check every message.
interop_clients.py BROKER group-handoff TOPIC PRODUCER CONSUMER
    PRODUCER writes 1,000 messages; a CONSUMER group member reads 400,
    commits and closes; a second run of the group resumes there and reads the
    other 600. Every message exactly once.
"""

import sys
import time

N = 10_000
PARTITIONS = 3


def expected(i):
    return f"key-{i}".encode(), f"value-{i}-{'x' * (i % 97)}".encode()


def with_kafka_python(broker, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    # kafka-python 3 is idempotent by default (InitProducerId, sequence numbers).
    producer = KafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
    futures = []
    for i in range(N):
        key, value = expected(i)
        futures.append(producer.send(topic, key=key, value=value, partition=i % PARTITIONS))
    producer.flush()
    for f in futures:
        f.get(timeout=30)  # raises if the broker refused the message
    producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=broker,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=15_000,
    )
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    got = []
    for msg in consumer:
        got.append((msg.partition, msg.offset, msg.key, msg.value))
        if len(got) == N:
            break
    consumer.close()
    return got


def with_confluent_kafka(broker, topic):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    failures = []
    producer = Producer(
        {"bootstrap.servers": broker, "acks": "all", "linger.ms": 5, "enable.idempotence": True}
    )
    for i in range(N):
        key, value = expected(i)
        while True:
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=value,
                    partition=i % PARTITIONS,
                    on_delivery=lambda err, _m: err and failures.append(err),
                )
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(30)
    assert not failures, failures[:3]

    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": "sluice-interop-assign",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got = []
    deadline = time.time() + 60
    while len(got) < N and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
    consumer.close()
    return got


def check(got):
    assert len(got) == N, f"consumed {len(got)} of {N}"
    seen = set()
    next_offset = [0] * PARTITIONS
    for partition, offset, key, value in sorted(got, key=lambda m: (m[0], m[1])):
        i = int(key.decode().split("-")[1])
        assert (key, value) == expected(i), f"message {i} differs"
        assert partition == i % PARTITIONS, f"message {i} in partition {partition}"
        assert offset == next_offset[partition], f"gap at {partition}/{offset}"
        next_offset[partition] += 1
        assert i not in seen, f"message {i} twice"
        seen.add(i)


GROUP_N = 1000


def group_produce(client, broker, topic):
    values = [(f"g-{i}".encode(), f"gv-{i}".encode()) for i in range(GROUP_N)]
    if client == "kafka-python":
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=broker, acks="all")
        futures = [p.send(topic, key=k, value=v, partition=i % PARTITIONS) for i, (k, v) in enumerate(values)]
        p.flush()
        for f in futures:
            f.get(timeout=30)
        p.close()
    else:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": broker, "acks": "all"})
        for i, (k, v) in enumerate(values):
            p.produce(topic, key=k, value=v, partition=i % PARTITIONS)
        assert p.flush(30) == 0


def group_read(client, broker, topic, group, count):
    """Reads `count` messages as a member of `group`, commits, closes."""
    got = []
    if client == "kafka-python":
        from kafka import KafkaConsumer

        c = KafkaConsumer(
            topic,
            bootstrap_servers=broker,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            consumer_timeout_ms=30_000,
            max_poll_records=50,
        )
        for msg in c:
            got.append((msg.partition, msg.offset, msg.value))
            if len(got) == count:
                break
        c.commit()
        c.close()
    else:
        from confluent_kafka import Consumer

        c = Consumer(
            {
                "bootstrap.servers": broker,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        c.subscribe([topic])
        deadline = time.time() + 60
        while len(got) < count and time.time() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.partition(), msg.offset(), msg.value()))
            c.commit(message=msg, asynchronous=False)
        c.close()
    return got


def group_handoff(broker, topic, producer, consumer):
    group_produce(producer, broker, topic)
    group = f"handoff-{topic}"
    first = group_read(consumer, broker, topic, group, 400)
    second = group_read(consumer, broker, topic, group, GROUP_N - 400)
    assert len(first) == 400, f"first run read {len(first)}"
    assert len(second) == GROUP_N - 400, f"second run read {len(second)}"
    seen = {(p, o) for p, o, _ in first + second}
    assert len(seen) == GROUP_N, "a message was read twice or not at all"
    values = sorted(v for _, _, v in first + second)
    assert values == sorted(f"gv-{i}".encode() for i in range(GROUP_N))
    print(f"group handoff {producer} -> {consumer}: {GROUP_N} messages, second run resumed")


def main():
    if sys.argv[2] == "group-handoff":
        broker, _, topic, producer, consumer = sys.argv[1:6]
        group_handoff(broker, topic, producer, consumer)
        return
    broker, client, topic = sys.argv[1:4]
    run = {"kafka-python": with_kafka_python, "confluent-kafka": with_confluent_kafka}[client]
    got = run(broker, topic)
    check(got)
    print(f"{client}: {len(got)} messages over {PARTITIONS} partitions checked")


if __name__ == "__main__":
    main()
