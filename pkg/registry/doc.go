// Package registry is troupe's built-in schema registry: the part of the
// Confluent Schema Registry REST API that Avro serializers in every language
// use, kept in a compacted Kafka topic (README: Schemas). `troupe dev` serves it
// on --registry-port; `troupe registry` runs it alone. Any
// Confluent-compatible registry (Confluent, Karapace, Redpanda, Apicurio)
// can replace it: troupe's client only speaks the standard API.
//
// Served (README's "The built-in registry" lists the parameters): GET
// /subjects, GET|POST /subjects/{s}/versions, GET
// /subjects/{s}/versions/{v|latest}[/schema|/referencedby], GET
// /subjects/{s}/metadata, POST /subjects/{s} (lookup), DELETE
// /subjects/{s}[/versions/{v}] (soft, then ?permanent=true), GET /schemas,
// GET /schemas/ids/{id}[/schema|/versions|/subjects], GET /schemas/types,
// POST /compatibility/subjects/{s}/versions[/{v|latest}], GET|PUT|DELETE
// /config[/{s}] and /mode[/{s}] (READWRITE, READONLY, IMPORT), GET
// /contexts (only the default, "."). Errors are Confluent's:
// {"error_code":40401,"message":"..."}, with its codes for each wrong order
// (40404-40409, 42204-42206). Avro only (JSON Schema and Protobuf are a
// 42201), with schema references: a schema may use the named types of the
// versions it references, which are parsed before it into the same
// hamba/avro cache, and which cannot be deleted while it is used.
//
// # Storage and several instances
//
// Every change is a record in the topic (default _schemas, one partition,
// cleanup.policy=compact); the in-memory state is the topic applied in
// order (store.go says which record means what, and why compaction keeps
// the meaning). A Server reads the topic to its end before it answers
// (Ready), and then keeps following it, so changes made through another
// instance appear here too.
//
// Confluent's registry elects a leader that assigns ids. This one has no
// leader: a write is a proposal (subject, version, id, schema) computed from
// the writer's view, appended to the topic, and applied by every instance
// with one deterministic rule: the first proposal for a subject's next
// version wins, and a proposal whose id is taken by another schema (or whose
// schema has another id) loses and changes nothing. The writer waits until it
// has read its own record back: if it won, it answers; if it lost to a
// concurrent write from another instance, it recomputes against the newer
// state (re-checking compatibility) and tries again. Because all instances
// apply the same log in the same order, they agree on every id, and a
// restarted instance rebuilds exactly the same state. Schema records are
// never rewritten (each proposal has its own key), so compaction cannot
// reorder or drop them, nor the permanent deletions (each has its own key
// too); soft deletions and settings are separate records whose meaning does
// not change where compaction moves them.
//
// Reads are served from memory. A read that finds nothing (an id or subject
// another instance registered a moment ago) first catches up with the end of
// the topic, so a client that registers through one instance and reads
// through another sees its write.
//
// # Compatibility
//
// A new version is checked against the latest live version (or every live
// version for the _TRANSITIVE levels) under the subject's level, else the
// global one (BACKWARD by default), with hamba/avro's schema compatibility
// check. When it fails, the registry walks both schemas to name each field
// that broke it, e.g.
//
//	field "customerId" (string) was added without a default: data written
//	with version 1 has no value for it; give it a default (BACKWARD: ...)
//
// # Limits
//
// Checking a schema costs time cubic in its nesting (hamba/avro
// fingerprints every level: 1,000 nested records took some 50 CPU-seconds),
// and this registry may share a process with the steps (troupe dev). So a
// schema over Config.MaxSchemaBytes (256 KiB) or nesting JSON deeper than
// Config.MaxSchemaDepth (96 levels; a nested record takes 3) is refused with
// 422, a request body over twice the schema limit with 413; at most
// Config.MaxChecks (2) compatibility checks run at once, each answered
// within Config.CheckTimeout (10 s; 422 past it, 503 when no turn came);
// subject names have at most MaxSubjectBytes. A schema with references is
// held to the size and nesting limits with the types it references
// inlined, and may pull in at most 100 schemas. A schema that makes
// hamba/avro panic is a 422, any other panic a 500, both in Confluent's
// JSON format like every error, and an error quotes at most a few hundred
// bytes of the request.
package registry
