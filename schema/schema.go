package schema

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	xmessage "golang.org/x/text/message"

	"github.com/polybus/polybus/message"
)

// Schema is one version of an event type's JSON Schema, compiled for
// validation (draft 2020-12 unless the document's $schema names another
// draft) and parsed for the compatibility checker. It is immutable and
// safe for concurrent use.
type Schema struct {
	// Type is the event type's name, such as "OrderPlaced".
	Type string
	// Version is the schema's version: 1 for the first.
	Version int
	// Raw is the schema document as given.
	Raw []byte

	doc      any
	compiled *jsonschema.Schema
}

// Compile parses and compiles raw as version version of event type typ.
// Errors: InvalidArgument for an empty type, a version below 1, a
// document that is not JSON or not a valid JSON Schema (draft 2020-12),
// or a $ref to anything but the document itself.
func Compile(typ string, version int, raw []byte) (*Schema, error) {
	const op = "schema: compile"
	if typ == "" || version < 1 {
		return nil, message.Errorf(message.InvalidArgument, op, "want a type name and a version of 1 or more, got %q v%d", typ, version)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, message.Errorf(message.InvalidArgument, op, "%s v%d: not JSON: %v", typ, version, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	// No loader: a schema of an event is self-contained, so a $ref to a
	// file or URL fails here rather than reading the disk or the network.
	c.UseLoader(noLoader{})
	loc := "polybus:schemas/" + typ + "/v" + strconv.Itoa(version) + ".json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, message.Errorf(message.InvalidArgument, op, "%s v%d: %v", typ, version, err)
	}
	compiled, err := c.Compile(loc)
	if err != nil {
		return nil, message.Errorf(message.InvalidArgument, op, "%s v%d: %v", typ, version, err)
	}
	return &Schema{Type: typ, Version: version, Raw: raw, doc: doc, compiled: compiled}, nil
}

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("only references inside the schema are allowed, not %s", url)
}

// String returns "Type vN".
func (s *Schema) String() string { return s.Type + " v" + strconv.Itoa(s.Version) }

// DataSchema returns the URI of s that goes in message.KeyDataSchema:
// polybus:schemas/TYPE/vN.json.
func (s *Schema) DataSchema() string {
	return "polybus:schemas/" + s.Type + "/v" + strconv.Itoa(s.Version) + ".json"
}

// Validate checks that payload, a JSON document, is valid under s.
// Errors: InvalidArgument naming the schema and each failing instance
// location and reason, or that the payload is not JSON.
func (s *Schema) Validate(payload []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return message.Errorf(message.InvalidArgument, "schema: validate", "%s: payload is not JSON: %v", s, err)
	}
	return s.ValidateValue(v)
}

// ValidateValue is Validate for a decoded JSON value (as
// jsonschema.UnmarshalJSON or encoding/json with UseNumber returns it).
func (s *Schema) ValidateValue(v any) error {
	err := s.compiled.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		return message.Errorf(message.InvalidArgument, "schema: validate", "%s: %s", s, reasons(ve))
	}
	return message.Errorf(message.InvalidArgument, "schema: validate", "%s: %v", s, err)
}

var printer = xmessage.NewPrinter(language.English)

// reasons flattens a validation error to its leaves: "#/total: got
// string, want number; #: missing property 'id'".
func reasons(ve *jsonschema.ValidationError) string {
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "#"
			if len(e.InstanceLocation) > 0 {
				loc += "/" + strings.Join(e.InstanceLocation, "/")
			}
			out = append(out, loc+": "+e.ErrorKind.LocalizedString(printer))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return strings.Join(out, "; ")
}

// Stamp sets m's type and schema version metadata (message.KeyType,
// message.KeySchemaVersion and message.KeyDataSchema) to s's.
func (s *Schema) Stamp(m *message.Message) {
	if m.Metadata == nil {
		m.Metadata = message.Metadata{}
	}
	m.Metadata[message.KeyType] = s.Type
	m.Metadata[message.KeySchemaVersion] = strconv.Itoa(s.Version)
	m.Metadata[message.KeyDataSchema] = s.DataSchema()
}

// VersionOf returns the schema version in md (message.KeySchemaVersion):
// 1 when md has none. Errors: InvalidArgument for a value that is not a
// number of 1 or more.
func VersionOf(md message.Metadata) (int, error) {
	v, ok := md[message.KeySchemaVersion]
	if !ok || v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, message.Errorf(message.InvalidArgument, "schema: version", "%s %q is not a version (1, 2, ...)", message.KeySchemaVersion, v)
	}
	return n, nil
}
