package schema

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/polybus/polybus/message"
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "OrderPlaced/v1.json", closed(`"id": {"type": "string"}`, `["id"]`))
	write(t, dir, "OrderPlaced/v2.json", closed(`"id": {"type": "string"}, "note": {"type": "string"}`, `["id"]`))
	write(t, dir, "OrderPlaced/compatibility", "full_transitive\n")
	write(t, dir, "OrderPlaced/README.md", "ignored")
	write(t, dir, "Shipped/v1.json", `{"type": "object"}`)
	write(t, dir, "contracts/team/billing.yml", "consumer: billing\ntype: OrderPlaced\nfields:\n  - {path: id, type: string, required: true}\n")
	r, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Types(); !slices.Equal(got, []string{"OrderPlaced", "Shipped"}) {
		t.Errorf("types %v", got)
	}
	if r.Mode("OrderPlaced") != FullTransitive || r.Mode("Shipped") != Backward || r.Mode("Unknown") != Backward {
		t.Errorf("modes %s %s", r.Mode("OrderPlaced"), r.Mode("Shipped"))
	}
	if s, ok := r.Latest("OrderPlaced"); !ok || s.Version != 2 {
		t.Errorf("latest %v", s)
	}
	if cs := r.Contracts(); len(cs) != 1 || cs[0].File != "contracts/team/billing.yml" || cs[0].Consumer != "billing" {
		t.Errorf("contracts %+v", cs)
	}
	ps := r.Check()
	if got := rules(ps); !slices.Equal(got, []string{"#/properties/note property-added-to-closed-model"}) || ps[0].Direction != OldReadsNew {
		t.Errorf("check: %v", ps)
	}
	if _, ok := r.Schema("OrderPlaced", 3); ok {
		t.Error("v3 found")
	}

	for _, tc := range []struct {
		name, file, content, want string
		code                      message.Code
	}{
		{"bad file name", "A/version1.json", "{}", "want a version file named vN.json", message.InvalidArgument},
		{"gap", "A/v2.json", "{}", "v1 is missing", message.InvalidArgument},
		{"not JSON", "A/v1.json", "{", "A v1: not JSON", message.InvalidArgument},
		{"not a schema", "A/v1.json", `{"type": 5}`, "A v1:", message.InvalidArgument},
		{"remote $ref", "A/v1.json", `{"$ref": "https://example.com/x.json"}`, "only references inside the schema", message.InvalidArgument},
		{"bad mode", "A/compatibility", "SOMETIMES", "unknown compatibility mode", message.InvalidArgument},
		{"contract: unknown key", "contracts/c.yaml", "consumer: x\ntype: A\nfield: []\n", "field not found", message.InvalidArgument},
		{"contract: no fields", "contracts/c.yaml", "consumer: x\ntype: A\n", "want consumer, type and at least one field", message.InvalidArgument},
		{"contract: bad path", "contracts/c.yaml", "consumer: x\ntype: A\nfields: [{path: a..b}]\n", `field path "a..b"`, message.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			write(t, d, tc.file, tc.content)
			_, err := LoadDir(d)
			if message.CodeOf(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadDir: %v, want %s containing %q", err, tc.code, tc.want)
			}
		})
	}
	if _, err := LoadDir(filepath.Join(dir, "nope")); !errors.Is(err, message.ErrNotFound) {
		t.Errorf("missing dir: %v", err)
	}
}

func TestRegistry(t *testing.T) {
	var r Registry
	if _, err := r.Register("A", []byte(`{"type": "string"}`)); err != nil {
		t.Fatal(err)
	}
	_, err := r.Register("A", []byte(`{"type": "integer"}`))
	var ie *IncompatibleError
	if !errors.As(err, &ie) || !errors.Is(err, message.ErrInvalidArgument) || ie.Mode != Backward || len(ie.Problems) != 1 || ie.Problems[0].Rule != "type-changed" {
		t.Fatalf("incompatible register: %v", err)
	}
	r.SetMode("A", None)
	if s, err := r.Register("A", []byte(`{"type": "integer"}`)); err != nil || s.Version != 2 {
		t.Fatalf("register under NONE: %v, %v", s, err)
	}
	if _, err := r.Register("A", []byte(`{`)); message.CodeOf(err) != message.InvalidArgument {
		t.Errorf("bad schema: %v", err)
	}
	s, _ := Compile("A", 5, []byte(`{}`))
	if err := r.Add(s); message.CodeOf(err) != message.InvalidArgument {
		t.Errorf("add out of order: %v", err)
	}
	if _, err := Compile("", 1, []byte(`{}`)); message.CodeOf(err) != message.InvalidArgument {
		t.Errorf("compile with no type: %v", err)
	}
	for _, in := range []string{"backward", " FULL_TRANSITIVE\n", "None"} {
		if _, err := ParseMode(in); err != nil {
			t.Errorf("ParseMode(%q): %v", in, err)
		}
	}
	r.AddContract(&Contract{File: "c.yaml", Consumer: "x", Type: "Nope", Fields: []Field{{Path: "a"}}})
	if ps := r.Check(); len(ps) != 1 || ps[0].Rule != "contract-type-unknown" || ps[0].String() != "Nope v0 contract of x: #: contract-type-unknown: consumer x reads Nope, which has no schema" {
		t.Errorf("check: %v", ps)
	}
}

func TestContracts(t *testing.T) {
	s := compile(t, 4, `{
		"$defs": {"money": {"type": "object", "required": ["value"], "properties": {"value": {"type": "integer"}, "unit": {"type": "string"}}}},
		"type": "object", "required": ["id", "total", "lines"],
		"properties": {
			"id": {"type": "string"},
			"total": {"$ref": "#/$defs/money"},
			"note": {"type": ["string", "null"]},
			"lines": {"type": "array", "items": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}, "qty": {"type": "number", "default": 1}}}},
			"tags": {"type": "string"}
		}}`)
	for _, tc := range []struct {
		field Field
		want  string // "PATH RULE", "" when it holds
	}{
		{Field{Path: "id", Type: Types{"string"}, Required: true}, ""},
		{Field{Path: "total.value", Type: Types{"number"}, Required: true}, ""},
		{Field{Path: "total.value", Type: Types{"integer"}}, ""},
		{Field{Path: "total.unit", Type: Types{"string"}, Required: true}, "#/properties/total/properties/unit contract-field-optional"},
		{Field{Path: "lines[].sku", Type: Types{"string"}, Required: true}, ""},
		{Field{Path: "lines[].qty", Type: Types{"integer"}}, "#/properties/lines/items/properties/qty contract-type-mismatch"},
		{Field{Path: "lines[].qty", Type: Types{"number"}, Required: true}, ""}, // a default fills it in
		{Field{Path: "note", Type: Types{"string"}}, "#/properties/note contract-type-mismatch"},
		{Field{Path: "note", Type: Types{"string", "null"}}, ""},
		{Field{Path: "note", Required: true}, "#/properties/note contract-field-optional"},
		{Field{Path: "tags[]", Type: Types{"string"}}, "#/properties/tags contract-type-mismatch"},
		{Field{Path: "customer.name", Type: Types{"string"}}, "#/properties/customer contract-field-missing"},
		{Field{Path: "total.cents"}, "#/properties/total/properties/cents contract-field-missing"},
	} {
		c := &Contract{File: "contracts/x.yaml", Consumer: "x", Type: "T", Fields: []Field{tc.field}}
		ps := c.Check(s)
		got := ""
		if len(ps) > 0 {
			got = ps[0].Path + " " + ps[0].Rule
			if len(ps) != 1 || ps[0].Subject != "T" || ps[0].New != 4 || ps[0].Contract != "contracts/x.yaml" || ps[0].Consumer != "x" {
				t.Errorf("%s: %+v", tc.field.Path, ps)
			}
		}
		if got != tc.want {
			t.Errorf("%s %v required=%v: %q, want %q", tc.field.Path, tc.field.Type, tc.field.Required, got, tc.want)
		}
	}
	c, err := ParseContract("c.yaml", []byte("consumer: x\ntype: T\nfields:\n  - path: note\n    type: [string, \"null\"]\n"))
	if err != nil || !slices.Equal(c.Fields[0].Type, Types{"string", "null"}) {
		t.Errorf("parse a type list: %+v, %v", c, err)
	}
}

func TestValidateAndUpcasters(t *testing.T) {
	s := compile(t, 1, closed(`"id": {"type": "string"}, "n": {"type": "integer", "minimum": 0}`, `["id"]`))
	err := s.Validate([]byte(`{"n": -1.5}`))
	if !errors.Is(err, message.ErrInvalidArgument) || !strings.Contains(err.Error(), "T v1: ") ||
		!strings.Contains(err.Error(), "#: missing property 'id'") || !strings.Contains(err.Error(), "#/n: got number, want integer") {
		t.Errorf("validate: %v", err)
	}
	if _, err := VersionOf(message.Metadata{message.KeySchemaVersion: "0"}); message.CodeOf(err) != message.InvalidArgument {
		t.Errorf("version 0: %v", err)
	}
	var u Upcasters
	if err := u.Register("T", 2, func(map[string]any) error { return nil }); message.CodeOf(err) != message.InvalidArgument {
		t.Errorf("step out of order: %v", err)
	}
	if err := u.Register("T", 1, nil); message.CodeOf(err) != message.InvalidArgument {
		t.Errorf("nil step: %v", err)
	}
	_ = u.Register("T", 1, func(ev map[string]any) error { ev["v2"] = true; return nil })
	md := message.Metadata{"k": "v"}
	if got := u.Stamp("T", md); got[message.KeySchemaVersion] != "2" || got["k"] != "v" || len(md) != 1 {
		t.Errorf("stamp: %v (input %v)", got, md)
	}
	if got := u.Stamp("Other", md); len(got) != 1 {
		t.Errorf("stamp of a type with no chain: %v", got)
	}
	if _, _, err := u.Upcast("T", nil, []byte(`[1]`)); !message.IsPermanent(err) {
		t.Errorf("upcast of an array: %v", err)
	}
	out, omd, err := u.Upcast("T", nil, []byte(`{"big": 12345678901234567890}`))
	if err != nil || string(out) != `{"big":12345678901234567890,"v2":true}` || omd[message.KeySchemaVersion] != "2" {
		t.Errorf("upcast keeps numbers exact: %s %v %v", out, omd, err)
	}
}
