// Package schema versions event types: a JSON Schema (draft 2020-12)
// per version of each type, a registry that checks every new version
// against the earlier ones under a compatibility mode, consumer-driven
// contracts, validation on publish and on consume, and upcasters that
// bring old events to the newest version on consume and on event-store
// replay.
//
// # Semantics
//
// An event's type and version travel in its metadata:
// message.KeyType ("polybus-type", the CloudEvents type attribute, as
// the buses set it), message.KeySchemaVersion ("polybus-schema-version",
// 1, 2, ...; absent means 1) and message.KeyDataSchema
// ("polybus-dataschema", the CloudEvents dataschema attribute, a URI
// polybus:schemas/TYPE/vN.json). [Schema.Stamp] sets all three.
//
// A registry lives in the repository as files ([LoadDir]):
//
//	schemas/OrderPlaced/v1.json         version 1 of OrderPlaced's JSON Schema
//	schemas/OrderPlaced/v2.json         version 2 (versions run from 1 with no gap)
//	schemas/OrderPlaced/compatibility   the type's mode, one word (absent: BACKWARD)
//	schemas/contracts/billing.yaml      a consumer contract ([Contract])
//
// A [Registry] may also be filled in code ([Registry.Register] refuses
// an incompatible version). `polybus schema check DIR` runs
// [Registry.Check] and exits 1 with one line per problem, for CI.
//
// The modes are Confluent Schema Registry's: BACKWARD (a consumer using
// the new schema reads data produced with the previous one), FORWARD
// (a consumer using the previous schema reads data produced with the new
// one), FULL (both), their _TRANSITIVE forms (against every earlier
// version, not only the previous one) and NONE.
//
// The checker asks, for each direction, whether every instance the
// writer's schema admits is admitted by the reader's, and reports each
// place where not, as a [Problem] with a JSON path, a rule and the
// direction (BACKWARD problems break readers: consumers cannot upgrade
// first; FORWARD problems break writers: producers cannot). Like
// Confluent's checker it treats content models strictly: under an open
// model (additionalProperties absent or true) old data may already hold
// any value under a new property's name, so adding a property to an open
// schema is not BACKWARD compatible; close the model
// (additionalProperties: false) to add optional properties, or use a
// partially open one (additionalProperties or patternProperties with a
// schema) whose schema covers what is added and removed.
//
// Rules (the ID names the change from the old schema to the new one):
//
//	type-changed, type-narrowed, type-widened     type sets (integer is a number; type arrays)
//	enum-added, enum-removed, enum-narrowed, enum-extended
//	const-added, const-removed, const-changed
//	required-added, required-removed              a required property with a default in the reader is fine
//	property-added-to-open-model                  reader declares a property the open writer may hold anything under
//	property-removed-from-open-model
//	property-removed-from-closed-model            writer's property, reader closed (additionalProperties: false)
//	property-added-to-closed-model
//	property-added-not-covered, property-removed-not-covered  partially open models
//	content-model-closed, content-model-opened    additionalProperties false on one side only
//	minimum-*, maximum-*, min-length-*, max-length-*, min-items-*, max-items-*,
//	min-properties-*, max-properties-*            -added, -removed, -increased, -decreased
//	multiple-of-added, multiple-of-removed, multiple-of-changed
//	pattern-added, pattern-removed, pattern-changed
//	unique-items-added, unique-items-removed
//	item-added-to-closed-model, item-removed-from-closed-model  a tuple (prefixItems) with items: false
//	union-narrowed, union-extended                anyOf/oneOf branches (oneOf read as anyOf)
//	schema-false                                  the reader accepts nothing
//	keyword-changed                               not, if/then/else, contains, format, ...: not reasoned about, reported when changed
//	contract-field-missing, contract-field-optional, contract-type-mismatch, contract-type-unknown
//
// Objects are compared property by property, arrays by items and
// prefixItems position by position; local $refs (#/$defs/..., any JSON
// pointer into the document) are followed, a cycle stopping where a pair
// of schemas is met again; allOf members are merged into one schema.
// Paths follow the instance's structure (#/properties/customer/properties/name),
// not where a $ref points.
//
// Validation on publish is opt-in: publish through a [Publisher]
// wrapped around a *publisher.Publisher; an invalid message fails the
// call with message.ErrInvalidArgument and nothing is sent; on the typed
// buses, set bus.Options.Validate to [Registry.ValidateMessage]. On consume,
// [ValidateMiddleware] turns an invalid message into a permanent error
// carrying the reason, which middleware.DLQ dead-letters. [Upcasters]
// hold chains v1 → v2 → v3 per type; [UpcastMiddleware] applies them on
// consume and eventstore.Options.Upcaster on replay, so handlers and
// aggregates see only the newest version.
//
// # Errors
//
// Bad schemas, modes, contracts and invalid payloads are InvalidArgument
// (a refused Register is an *IncompatibleError with that code); failed
// upcasts are Permanent; a missing registry directory is NotFound.
package schema
