"""Python Kafka clients against a secured Sluice listener, driven by
crates/sluice/tests/security.rs.

security_clients.py roundtrip CLIENT BOOTSTRAP TOPIC COUNT [key=value ...]
    CLIENT (confluent-kafka | kafka-python) produces COUNT records with
    random binary keys and values (acks=all) to TOPIC, then consumes the
    topic from the beginning and checks every record came back byte-exact
    and in order. The key=value settings are librdkafka's names:
    security.protocol, sasl.mechanism, sasl.username, sasl.password,
    ssl.ca.location, ssl.certificate.location, ssl.key.location; for
    kafka-python they are translated. Prints "ok COUNT" or fails.

security_clients.py consume-for CLIENT BOOTSTRAP TOPIC SECONDS EXPECT [key=value ...]
    Consumes TOPIC for SECONDS (records keep arriving from the test's
    producer meanwhile) and prints "got N" once at least EXPECT records have
    come and SECONDS have passed; a KIP-368 re-authentication in between
    must not cost a record.
"""

import os
import sys
import time


def settings(args):
    out = {}
    for a in args:
        k, v = a.split("=", 1)
        out[k] = v
    return out


def kafka_python_conf(s):
    conf = {"security_protocol": s.get("security.protocol", "PLAINTEXT")}
    if "sasl.mechanism" in s:
        conf["sasl_mechanism"] = s["sasl.mechanism"]
        conf["sasl_plain_username"] = s["sasl.username"]
        conf["sasl_plain_password"] = s["sasl.password"]
    if "ssl.ca.location" in s:
        conf["ssl_cafile"] = s["ssl.ca.location"]
        conf["ssl_check_hostname"] = True
    if "ssl.certificate.location" in s:
        conf["ssl_certfile"] = s["ssl.certificate.location"]
        conf["ssl_keyfile"] = s["ssl.key.location"]
    return conf


def records(count):
    rng = os.urandom
    return [(rng(8) + i.to_bytes(4, "big"), rng(1 + (i * 37) % 300)) for i in range(count)]


def confluent_roundtrip(bootstrap, topic, count, s):
    from confluent_kafka import Consumer, Producer

    sent = records(count)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", **s})
    for k, v in sent:
        p.produce(topic, key=k, value=v)
    left = p.flush(30)
    if left:
        raise SystemExit(f"{left} records not acknowledged")
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **s,
        }
    )
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise SystemExit(f"consumer error: {m.error()}")
        got.append((m.key(), m.value()))
    c.close()
    return sent, got


def kafka_python_roundtrip(bootstrap, topic, count, s):
    from kafka import KafkaConsumer, KafkaProducer

    conf = kafka_python_conf(s)
    sent = records(count)
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **conf)
    futures = [p.send(topic, key=k, value=v) for k, v in sent]
    for f in futures:
        f.get(timeout=30)
    p.close()
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
        **conf,
    )
    got = []
    for m in c:
        got.append((m.key, m.value))
        if len(got) == count:
            break
    c.close()
    return sent, got


def roundtrip(client, bootstrap, topic, count, s):
    run = confluent_roundtrip if client == "confluent-kafka" else kafka_python_roundtrip
    sent, got = run(bootstrap, topic, int(count), s)
    if got != sent:
        missing = len([r for r in sent if r not in got])
        raise SystemExit(
            f"{client}: sent {len(sent)} records, got {len(got)} back; {missing} missing or changed"
        )
    print(f"ok {len(got)}", flush=True)


def consume_for(client, bootstrap, topic, seconds, expect, s):
    from confluent_kafka import Consumer

    if client != "confluent-kafka":
        raise SystemExit("consume-for runs with confluent-kafka (librdkafka re-authenticates)")
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            **s,
        }
    )
    c.subscribe([topic])
    got = 0
    end = time.time() + float(seconds)
    while time.time() < end or (got < int(expect) and time.time() < end + 20):
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            raise SystemExit(f"consumer error: {m.error()}")
        got += 1
    c.close()
    print(f"got {got}", flush=True)


def main():
    mode = sys.argv[1]
    if mode == "roundtrip":
        client, bootstrap, topic, count = sys.argv[2:6]
        roundtrip(client, bootstrap, topic, count, settings(sys.argv[6:]))
    elif mode == "consume-for":
        client, bootstrap, topic, seconds, expect = sys.argv[2:7]
        consume_for(client, bootstrap, topic, seconds, expect, settings(sys.argv[7:]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
