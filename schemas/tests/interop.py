#!/usr/bin/env python3
"""Interop with Python fastavro, driven by tests/interop.rs.

    python3 tests/interop.py SCHEMA_DIR write   # prints JSON lines {"case", "hex"}
    python3 tests/interop.py SCHEMA_DIR read    # stdin: JSON lines {"case", "hex"};
                                                # prints {"case", "file", "record"}

Single-object encoding is built and parsed here by hand, independently of the Rust code:
C3 01, then the CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the
schemaless datum. `fastavro.schema.fingerprint(pcf, "CRC-64-AVRO")` returns the fingerprint as
hex *in little-endian byte order* (for the schema "int": 8f5c393f1ad57572, the spec's value
0x7275d51a3f395c8f), i.e. exactly the 8 header bytes, so `bytes.fromhex` gives the header.

`read` decodes with the writer schema named by the header and resolves into the latest version
of the same record (the highest N among NAME.vN.avsc), as a tidings consumer does.
"""

import datetime
import io
import json
import os
import sys
import uuid

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def load(schema_dir):
    """{file name: (parsed schema, header fingerprint bytes)} for every .avsc file."""
    schemas = {}
    for name in sorted(os.listdir(schema_dir)):
        if name.endswith(".avsc"):
            with open(os.path.join(schema_dir, name)) as f:
                parsed = parse_schema(json.load(f))
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
            schemas[name] = (parsed, fp)
    return schemas


def encode(schemas, file, record):
    parsed, fp = schemas[file]
    out = io.BytesIO()
    out.write(MAGIC + fp)
    schemaless_writer(out, parsed, record)
    return out.getvalue()


def write(schemas):
    cases = {
        "activity_v2": ("activity.v2.avsc", {
            "id": "0192f3c4-5b6a-7c8d-9e0f-112233445566", "actor": 7, "verb": "comment",
            "object": "comment:991", "target": "post:12", "time_ms": 1700000000123,
            "to": [1, 300, 70000], "text": "from python, ünïcödé 🐍",
            "attributes": {"lang": "en", "client": "py"},
            "producer": {"name": "py-svc", "version": "3.12"},
        }),
        "activity_v1": ("activity.v1.avsc", {
            "id": "0192f3c4-5b6a-7c8d-9e0f-000000000009", "actor": 8, "verb": "post",
            "object": "post:1", "target": None, "time_ms": 1700000000000, "to": [],
            "text": "", "producer": {"name": "py-old", "version": "0.9"},
        }),
        "retraction": ("retraction.v1.avsc", {
            "id": "0192f3c4-5b6a-7c8d-9e0f-000000000001",
            "activity_id": "0192f3c4-5b6a-7c8d-9e0f-112233445566", "actor": 7,
            "time_ms": 1700000000999, "producer": {"name": "py-svc", "version": "3.12"},
        }),
        "update": ("update.v1.avsc", {
            "id": "0192f3c4-5b6a-7c8d-9e0f-000000000002",
            "activity_id": "0192f3c4-5b6a-7c8d-9e0f-112233445566", "actor": 7,
            "time_ms": 1700000001000, "text": "edited", "attributes": {"lang": "fr"},
            "producer": {"name": "py-svc", "version": "3.12"},
        }),
        "graph_change": ("graph_change.v1.avsc", {
            "id": "01890a5d-ac96-774b-bcce-b302099a8057", "actor": 42, "subject": 7,
            "op": "MUTE", "time_ms": 1700000000000,
            "producer": {"name": "graph-py", "version": "1"},
        }),
    }
    for case, (file, record) in cases.items():
        print(json.dumps({"case": case, "hex": encode(schemas, file, record).hex()}))


def plain(value):
    """fastavro's logical-type values back to their JSON wire form."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def read(schemas):
    by_fp = {fp: (file, parsed) for file, (parsed, fp) in schemas.items()}
    latest = {}  # record name -> (version, parsed)
    for file, (parsed, _) in schemas.items():
        stem, version = file[: -len(".avsc")].rsplit(".v", 1)
        if int(version) > latest.get(parsed["name"], (0, None))[0]:
            latest[parsed["name"]] = (int(version), parsed)
    for line in sys.stdin:
        msg = json.loads(line)
        payload = bytes.fromhex(msg["hex"])
        if payload[:2] != MAGIC:
            sys.exit(f"{msg['case']}: no single-object magic")
        fp = payload[2:10]
        if fp not in by_fp:
            sys.exit(f"{msg['case']}: fingerprint {fp.hex()} is not one of the .avsc files")
        file, writer = by_fp[fp]
        datum = io.BytesIO(payload[10:])
        record = schemaless_reader(datum, writer, latest[writer["name"]][1])
        if datum.tell() != len(payload) - 10:
            sys.exit(f"{msg['case']}: {len(payload) - 10 - datum.tell()} trailing bytes")
        print(json.dumps({"case": msg["case"], "file": file, "record": plain(record)}))


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("write", "read"):
        sys.exit(__doc__)
    schemas = load(sys.argv[1])
    write(schemas) if sys.argv[2] == "write" else read(schemas)


if __name__ == "__main__":
    main()
