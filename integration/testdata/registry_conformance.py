"""Conformance of troupe's built-in schema registry, through Confluent's
Python client (confluent-kafka's SchemaRegistryClient), with what
Confluent's Schema Registry API documents. Run by
integration/registry_conformance_test.go: python registry_conformance.py URL.

Each check prints one JSON line {"check": name, "ok": bool, "detail": ...};
the exit status is 1 when any failed.
"""
import json
import sys
import time
import traceback

from confluent_kafka.schema_registry import (Metadata, MetadataProperties, Schema, SchemaReference,
                                             SchemaRegistryClient, SchemaRegistryError)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

URL = sys.argv[1]
CUSTOMER = '{"type":"record","name":"Customer","namespace":"t","fields":[{"name":"id","type":"string"}]}'
ORDER = ('{"type":"record","name":"Order","namespace":"t","fields":['
         '{"name":"orderId","type":"string"},{"name":"customer","type":"t.Customer"}]}')
PLAIN = '{"type":"record","name":"Plain","namespace":"t","fields":[{"name":"a","type":"int"}]}'
PLAIN2 = ('{"type":"record","name":"Plain","namespace":"t","fields":[{"name":"a","type":"int"},'
          '{"name":"b","type":"string","default":""}]}')


_client = SchemaRegistryClient({"url": URL})


def client():
    # The client caches what it has seen: each use starts afresh, so that
    # every answer checked comes from the registry.
    _client.clear_caches()
    return _client


def avro(text, refs=None, metadata=None):
    return Schema(text, "AVRO", refs or [], metadata)


def code_of(fn):
    """The Confluent error code fn fails with, or None when it succeeds."""
    try:
        fn()
    except SchemaRegistryError as e:
        return e.error_code
    return None


checks = []


def check(fn):
    checks.append(fn)
    return fn


@check
def schema_types():
    assert client().get_schema_types() == ["AVRO"]


@check
def references_register_and_read_back():
    sr = client()
    sr.register_schema("ref-customer", avro(CUSTOMER))
    refs = [SchemaReference("t.Customer", "ref-customer", 1)]
    order_id = sr.register_schema("ref-orders-value", avro(ORDER, refs))
    got = client().get_schema(order_id)
    assert [(r.name, r.subject, r.version) for r in got.references] == [("t.Customer", "ref-customer", 1)], got
    found = client().lookup_schema("ref-orders-value", avro(ORDER, refs))
    assert found.schema_id == order_id and found.version == 1, found
    latest = client().get_latest_version("ref-orders-value")
    assert len(latest.schema.references) == 1, latest
    assert client().get_referenced_by("ref-customer", 1) == [order_id]


@check
def references_serialize_and_deserialize():
    # AvroSerializer with the latest registered version and AvroDeserializer
    # both resolve the reference through the registry.
    sr = client()
    ser = AvroSerializer(sr, None, conf={"auto.register.schemas": False, "use.latest.version": True})
    ctx = SerializationContext("ref-orders", MessageField.VALUE)
    order = {"orderId": "o-1", "customer": {"id": "c-1"}}
    data = ser(order, ctx)
    assert AvroDeserializer(client())(data, ctx) == order


@check
def references_block_deletion():
    sr = client()
    assert code_of(lambda: sr.delete_version("ref-customer", 1)) == 42206
    assert code_of(lambda: sr.delete_subject("ref-customer")) == 42206


@check
def references_unknown_type():
    assert code_of(lambda: client().register_schema("ref-bad", avro(ORDER))) == 42201


@check
def permanent_delete_of_subject():
    sr = client()
    sr.register_schema("del-subject", avro(PLAIN))
    assert code_of(lambda: sr.delete_subject("del-subject", permanent=True)) == 40405
    assert sr.delete_subject("del-subject") == [1]
    assert code_of(lambda: sr.delete_subject("del-subject")) == 40404
    assert sr.delete_subject("del-subject", permanent=True) == [1]
    assert code_of(lambda: sr.get_versions("del-subject", deleted=True)) == 40401
    assert "del-subject" not in sr.get_subjects(deleted=True)


@check
def permanent_delete_of_version():
    sr = client()
    sr.register_schema("del-version", avro(PLAIN))
    sr.register_schema("del-version", avro(PLAIN2))
    assert code_of(lambda: sr.delete_version("del-version", 2, permanent=True)) == 40407
    assert sr.delete_version("del-version", 2) == 2
    assert code_of(lambda: sr.delete_version("del-version", 2)) == 40406
    assert sr.delete_version("del-version", 2, permanent=True) == 2
    assert sr.get_versions("del-version", deleted=True) == [1]


@check
def compatibility_without_subject_level():
    sr = client()
    sr.register_schema("compat-plain", avro(PLAIN))
    assert code_of(lambda: sr.get_compatibility("compat-plain")) == 40408
    assert sr.get_compatibility() == "BACKWARD"
    sr.set_compatibility("compat-plain", "FULL")
    assert sr.get_compatibility("compat-plain") == "FULL"


@check
def test_compatibility_of_new_subject():
    sr = client()
    assert sr.test_compatibility("compat-brand-new", avro(PLAIN)) is True
    assert sr.test_compatibility_all_versions("compat-brand-new", avro(PLAIN)) is True


@check
def modes():
    sr = client()
    sr.register_schema("mode-ro", avro(PLAIN))
    assert sr.get_global_mode() == "READWRITE"
    assert code_of(lambda: sr.get_mode("mode-ro")) == 40409
    assert sr.update_mode("mode-ro", "READONLY") == "READONLY"
    assert sr.get_mode("mode-ro") == "READONLY"
    assert code_of(lambda: sr.register_schema("mode-ro", avro(PLAIN2))) == 42205
    assert code_of(lambda: sr.delete_subject("mode-ro")) == 42205
    assert sr.delete_mode("mode-ro") == "READONLY"
    assert code_of(lambda: sr.get_mode("mode-ro")) == 40409
    assert client().register_schema("mode-ro", avro(PLAIN2)) > 0
    assert code_of(lambda: sr.update_global_mode("IMPORT")) == 42205
    assert code_of(lambda: sr.update_global_mode("SIDEWAYS")) == 42204


@check
def contexts():
    assert client().get_contexts() == ["."]


@check
def schemas_by_id():
    sr = client()
    schema_id = sr.register_schema("ids-a", avro(PLAIN))
    sr.register_schema("ids-b", avro(PLAIN))
    assert sr.get_subjects_by_schema_id(schema_id, subject_name="ids-b") == ["ids-b"]
    versions = sr.get_schema_versions(schema_id)
    assert {(v.subject, v.version) for v in versions} >= {("ids-a", 1), ("ids-b", 1)}, versions


@check
def schemas_list():
    # The Python client has no call for GET /schemas: its REST client does.
    got = client()._rest_client.get("schemas", {"subjectPrefix": "ids-", "latestOnly": True})
    assert [(s["subject"], s["version"]) for s in got] == [("ids-a", 1), ("ids-b", 1)], got


@check
def latest_with_metadata():
    sr = client()
    sr.register_schema("md-value", avro(PLAIN))
    md = Metadata(None, MetadataProperties({"owner": "payments"}), None)
    schema_id = sr.register_schema("md-value", avro(PLAIN, metadata=md))
    got = client().get_latest_with_metadata("md-value", {"owner": "payments"})
    assert got.schema_id == schema_id and got.version == 2, got
    assert got.schema.metadata.properties.properties == {"owner": "payments"}, got
    assert code_of(lambda: client().get_latest_with_metadata("md-value", {"owner": "nobody"})) == 40403


@check
def protobuf_and_json_refused():
    for t in ("PROTOBUF", "JSON"):
        assert code_of(lambda: client().register_schema("other-types", Schema('{}', t))) == 42201


failed = 0
for fn in checks:
    start = time.monotonic()
    try:
        fn()
        print(json.dumps({"check": fn.__name__, "ok": True, "seconds": round(time.monotonic() - start, 3)}))
    except Exception as e:  # report every check, not just the first failure
        failed += 1
        where = traceback.extract_tb(e.__traceback__)[-1]
        detail = "%s %s at line %d: %s" % (type(e).__name__, e, where.lineno, where.line)
        print(json.dumps({"check": fn.__name__, "ok": False, "detail": detail}))
sys.exit(1 if failed else 0)
