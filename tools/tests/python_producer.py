#!/usr/bin/env python3
"""A non-Rust producer: confluent-kafka + fastavro, using only tidings' .avsc files.

    python3 python_producer.py SCHEMA_DIR BOOTSTRAP TOPIC ACTOR OBJECT

Builds the Avro single-object encoding by hand (C3 01, the CRC-64-AVRO fingerprint of the
schema's Parsing Canonical Form, the datum), keys the record with the actor's id as decimal
ASCII and uses librdkafka's murmur2_random partitioner (Java's default), as the README's
contract says. Prints {"partition": P, "offset": O, "id": ID} once the broker acknowledged.
"""

import io
import json
import os
import sys
import time
import uuid

from confluent_kafka import Producer
from fastavro import schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form


def main():
    schema_dir, bootstrap, topic, actor, obj = sys.argv[1:6]
    with open(os.path.join(schema_dir, "activity.v2.avsc")) as f:
        schema = parse_schema(json.load(f))
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    event_id = str(uuid.uuid4())
    record = {
        "id": event_id, "actor": int(actor), "verb": "post", "object": obj, "target": None,
        "time_ms": int(time.time() * 1000), "to": [], "text": "written by Python",
        "attributes": {"client": "confluent-kafka"},
        "producer": {"name": "py-svc", "version": "1.0"},
    }
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fp)
    schemaless_writer(buf, schema, record)

    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                  "enable.idempotence": True, "broker.address.family": "v4"})
    result = {}

    def done(err, msg):
        if err is not None:
            raise SystemExit(f"delivery failed: {err}")
        result.update(partition=msg.partition(), offset=msg.offset())

    p.produce(topic, key=str(actor).encode(), value=buf.getvalue(), on_delivery=done)
    if p.flush(30) != 0:
        raise SystemExit("not acknowledged within 30 s")
    print(json.dumps(dict(result, id=event_id)))


if __name__ == "__main__":
    main()
