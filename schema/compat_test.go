package schema

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// closed and open build object schemas: properties as JSON members,
// required as a JSON array ("" for none).
func closed(props, required string) string {
	return object(props, required, `"additionalProperties": false`)
}
func opened(props, required string) string { return object(props, required, "") }
func partial(props, required, additional string) string {
	return object(props, required, `"additionalProperties": `+additional)
}

func object(props, required, model string) string {
	var parts []string
	parts = append(parts, `"type": "object"`)
	if model != "" {
		parts = append(parts, model)
	}
	if required != "" {
		parts = append(parts, `"required": `+required)
	}
	parts = append(parts, `"properties": {`+props+`}`)
	return "{" + strings.Join(parts, ", ") + "}"
}

// pair is one schema change and the problems expected in each direction,
// as "PATH RULE"; none means compatible. FULL is compatible when both
// are empty.
type pair struct {
	name      string
	old, new  string
	back, fwd []string
}

// pairs are drawn from the cases Confluent documents for JSON Schema
// (content models open, closed and partially open; required properties;
// type narrowing and widening; enums; bounds) and from our own (tuples,
// $ref and cycles, unions, allOf, const, keywords the checker does not
// reason about).
var pairs = []pair{
	// Open content model: old data may hold anything under a new name.
	{"open: add optional property", opened(`"a": {"type": "string"}`, ""), opened(`"a": {"type": "string"}, "b": {"type": "string"}`, ""),
		[]string{"#/properties/b property-added-to-open-model"}, nil},
	{"open: remove optional property", opened(`"a": {"type": "string"}, "b": {"type": "string"}`, ""), opened(`"a": {"type": "string"}`, ""),
		nil, []string{"#/properties/b property-removed-from-open-model"}},
	{"open: add property of any type", opened(`"a": {"type": "string"}`, ""), opened(`"a": {"type": "string"}, "b": {}`, ""), nil, nil},
	// Closed content model.
	{"closed: add optional property", closed(`"a": {"type": "string"}`, ""), closed(`"a": {"type": "string"}, "b": {"type": "string"}`, ""),
		nil, []string{"#/properties/b property-added-to-closed-model"}},
	{"closed: remove optional property", closed(`"a": {"type": "string"}, "b": {"type": "string"}`, ""), closed(`"a": {"type": "string"}`, ""),
		[]string{"#/properties/b property-removed-from-closed-model"}, nil},
	{"closed: add required property", closed(`"a": {"type": "string"}`, `["a"]`), closed(`"a": {"type": "string"}, "b": {"type": "string"}`, `["a", "b"]`),
		[]string{"#/properties/b required-added"}, []string{"#/properties/b property-added-to-closed-model"}},
	{"closed: add required property with a default", closed(`"a": {"type": "string"}`, `["a"]`), closed(`"a": {"type": "string"}, "b": {"type": "string", "default": "x"}`, `["a", "b"]`),
		nil, []string{"#/properties/b property-added-to-closed-model"}},
	{"closed: remove required property", closed(`"a": {"type": "string"}, "b": {"type": "string"}`, `["a", "b"]`), closed(`"a": {"type": "string"}`, `["a"]`),
		[]string{"#/properties/b property-removed-from-closed-model"}, []string{"#/properties/b required-removed"}},
	{"closed: rename property", closed(`"a": {"type": "string"}`, `["a"]`), closed(`"z": {"type": "string"}`, `["z"]`),
		[]string{"#/properties/z required-added", "#/properties/a property-removed-from-closed-model"},
		[]string{"#/properties/a required-removed", "#/properties/z property-added-to-closed-model"}},
	{"make a property required", closed(`"a": {"type": "string"}`, ""), closed(`"a": {"type": "string"}`, `["a"]`),
		[]string{"#/properties/a required-added"}, nil},
	{"make a property optional", closed(`"a": {"type": "string"}`, `["a"]`), closed(`"a": {"type": "string"}`, ""),
		nil, []string{"#/properties/a required-removed"}},
	{"open to closed", opened(`"a": {"type": "string"}`, ""), closed(`"a": {"type": "string"}`, ""),
		[]string{"#/additionalProperties content-model-closed"}, nil},
	{"closed to open", closed(`"a": {"type": "string"}`, ""), opened(`"a": {"type": "string"}`, ""),
		nil, []string{"#/additionalProperties content-model-opened"}},
	// Partially open content model.
	{"partial: add covered property", partial(`"a": {"type": "string"}`, "", `{"type": "string"}`), partial(`"a": {"type": "string"}, "b": {"type": "string"}`, "", `{"type": "string"}`), nil, nil},
	{"partial: remove covered property", partial(`"a": {"type": "string"}, "b": {"type": "string"}`, "", `{"type": "string"}`), partial(`"a": {"type": "string"}`, "", `{"type": "string"}`), nil, nil},
	{"partial: add uncovered property", partial(`"a": {"type": "string"}`, "", `{"type": "string"}`), partial(`"a": {"type": "string"}, "b": {"type": "integer"}`, "", `{"type": "string"}`),
		[]string{"#/properties/b property-added-not-covered"}, []string{"#/properties/b property-added-not-covered"}},
	{"partial: remove uncovered property", partial(`"a": {"type": "string"}, "b": {"type": "integer"}`, "", `{"type": "string"}`), partial(`"a": {"type": "string"}`, "", `{"type": "string"}`),
		[]string{"#/properties/b property-removed-not-covered"}, []string{"#/properties/b property-removed-not-covered"}},
	{"partial: additionalProperties narrowed", partial(`"a": {"type": "string"}`, "", `{"type": "number"}`), partial(`"a": {"type": "string"}`, "", `{"type": "integer"}`),
		[]string{"#/additionalProperties type-narrowed"}, nil},
	{"partial: additionalProperties widened", partial(`"a": {"type": "string"}`, "", `{"type": "integer"}`), partial(`"a": {"type": "string"}`, "", `{"type": "number"}`),
		nil, []string{"#/additionalProperties type-widened"}},
	{"patternProperties: add a property the pattern covers",
		`{"type": "object", "additionalProperties": false, "patternProperties": {"^s_": {"type": "string"}}, "properties": {"id": {"type": "string"}}}`,
		`{"type": "object", "additionalProperties": false, "patternProperties": {"^s_": {"type": "string"}}, "properties": {"id": {"type": "string"}, "s_name": {"type": "string"}}}`, nil, nil},
	{"patternProperties: add a property the pattern does not cover",
		`{"type": "object", "additionalProperties": false, "patternProperties": {"^s_": {"type": "string"}}, "properties": {"id": {"type": "string"}}}`,
		`{"type": "object", "additionalProperties": false, "patternProperties": {"^s_": {"type": "string"}}, "properties": {"id": {"type": "string"}, "s_n": {"type": "integer"}}}`,
		[]string{"#/properties/s_n property-added-not-covered"}, []string{"#/properties/s_n property-added-not-covered"}},
	// Types.
	{"integer to number", closed(`"a": {"type": "integer"}`, ""), closed(`"a": {"type": "number"}`, ""), nil, []string{"#/properties/a type-widened"}},
	{"number to integer", closed(`"a": {"type": "number"}`, ""), closed(`"a": {"type": "integer"}`, ""), []string{"#/properties/a type-narrowed"}, nil},
	{"string to integer", closed(`"a": {"type": "string"}`, ""), closed(`"a": {"type": "integer"}`, ""), []string{"#/properties/a type-changed"}, []string{"#/properties/a type-changed"}},
	{"string to string or null", closed(`"a": {"type": "string"}`, ""), closed(`"a": {"type": ["string", "null"]}`, ""), nil, []string{"#/properties/a type-widened"}},
	{"string or null to string", closed(`"a": {"type": ["string", "null"]}`, ""), closed(`"a": {"type": "string"}`, ""), []string{"#/properties/a type-narrowed"}, nil},
	{"type array reordered", closed(`"a": {"type": ["null", "string"]}`, ""), closed(`"a": {"type": ["string", "null"]}`, ""), nil, nil},
	{"integer to number or string", closed(`"a": {"type": "integer"}`, ""), closed(`"a": {"type": ["number", "string"]}`, ""), nil, []string{"#/properties/a type-widened"}},
	{"type removed", closed(`"a": {"type": "string"}`, ""), closed(`"a": {}`, ""), nil, []string{"#/properties/a type-widened"}},
	{"type added", closed(`"a": {}`, ""), closed(`"a": {"type": "string"}`, ""), []string{"#/properties/a type-narrowed"}, nil},
	{"root object to array", `{"type": "object"}`, `{"type": "array"}`, []string{"# type-changed"}, []string{"# type-changed"}},
	{"property schema true to false", opened(`"a": true`, ""), opened(`"a": false`, ""), []string{"#/properties/a schema-false"}, nil},
	// Enums and const.
	{"enum extended", closed(`"s": {"type": "string", "enum": ["a", "b"]}`, ""), closed(`"s": {"type": "string", "enum": ["a", "b", "c"]}`, ""), nil, []string{"#/properties/s enum-extended"}},
	{"enum narrowed", closed(`"s": {"type": "string", "enum": ["a", "b", "c"]}`, ""), closed(`"s": {"type": "string", "enum": ["a", "b"]}`, ""), []string{"#/properties/s enum-narrowed"}, nil},
	{"enum added", closed(`"s": {"type": "string"}`, ""), closed(`"s": {"type": "string", "enum": ["a"]}`, ""), []string{"#/properties/s enum-added"}, nil},
	{"enum removed", closed(`"s": {"type": "string", "enum": ["a"]}`, ""), closed(`"s": {"type": "string"}`, ""), nil, []string{"#/properties/s enum-removed"}},
	{"enum reordered", closed(`"s": {"enum": ["a", "b"]}`, ""), closed(`"s": {"enum": ["b", "a"]}`, ""), nil, nil},
	{"enum of numbers 1 and 1.0", closed(`"n": {"enum": [1, 2]}`, ""), closed(`"n": {"enum": [1.0, 2.0]}`, ""), nil, nil},
	{"const added", closed(`"k": {"type": "string"}`, ""), closed(`"k": {"type": "string", "const": "v1"}`, ""), []string{"#/properties/k const-added"}, nil},
	{"const removed", closed(`"k": {"type": "string", "const": "v1"}`, ""), closed(`"k": {"type": "string"}`, ""), nil, []string{"#/properties/k const-removed"}},
	{"const changed", closed(`"k": {"const": "a"}`, ""), closed(`"k": {"const": "b"}`, ""), []string{"#/properties/k const-changed"}, []string{"#/properties/k const-changed"}},
	{"const to enum holding it", closed(`"k": {"const": "a"}`, ""), closed(`"k": {"enum": ["a", "b"]}`, ""), nil, []string{"#/properties/k const-changed"}},
	// Numbers.
	{"minimum added", closed(`"n": {"type": "number"}`, ""), closed(`"n": {"type": "number", "minimum": 0}`, ""), []string{"#/properties/n/minimum minimum-added"}, nil},
	{"minimum removed", closed(`"n": {"type": "number", "minimum": 0}`, ""), closed(`"n": {"type": "number"}`, ""), nil, []string{"#/properties/n/minimum minimum-removed"}},
	{"minimum increased", closed(`"n": {"type": "number", "minimum": 0}`, ""), closed(`"n": {"type": "number", "minimum": 5}`, ""), []string{"#/properties/n/minimum minimum-increased"}, nil},
	{"minimum decreased", closed(`"n": {"type": "number", "minimum": 5}`, ""), closed(`"n": {"type": "number", "minimum": 0}`, ""), nil, []string{"#/properties/n/minimum minimum-decreased"}},
	{"minimum made exclusive", closed(`"n": {"type": "number", "minimum": 0}`, ""), closed(`"n": {"type": "number", "exclusiveMinimum": 0}`, ""), []string{"#/properties/n/minimum minimum-increased"}, nil},
	{"maximum added", closed(`"n": {"type": "integer"}`, ""), closed(`"n": {"type": "integer", "maximum": 10}`, ""), []string{"#/properties/n/maximum maximum-added"}, nil},
	{"maximum increased", closed(`"n": {"type": "integer", "maximum": 10}`, ""), closed(`"n": {"type": "integer", "maximum": 20}`, ""), nil, []string{"#/properties/n/maximum maximum-increased"}},
	{"maximum decreased", closed(`"n": {"type": "integer", "maximum": 20}`, ""), closed(`"n": {"type": "integer", "maximum": 10}`, ""), []string{"#/properties/n/maximum maximum-decreased"}, nil},
	{"multipleOf added", closed(`"n": {"type": "integer"}`, ""), closed(`"n": {"type": "integer", "multipleOf": 2}`, ""), []string{"#/properties/n/multipleOf multiple-of-added"}, nil},
	{"multipleOf 2 to 4", closed(`"n": {"type": "integer", "multipleOf": 2}`, ""), closed(`"n": {"type": "integer", "multipleOf": 4}`, ""), []string{"#/properties/n/multipleOf multiple-of-changed"}, nil},
	{"bounds on a string are not numeric", closed(`"s": {"type": "string"}`, ""), closed(`"s": {"type": "string", "minimum": 3}`, ""), nil, nil},
	// Strings.
	{"maxLength added", closed(`"s": {"type": "string"}`, ""), closed(`"s": {"type": "string", "maxLength": 10}`, ""), []string{"#/properties/s/maxLength max-length-added"}, nil},
	{"maxLength increased", closed(`"s": {"type": "string", "maxLength": 10}`, ""), closed(`"s": {"type": "string", "maxLength": 20}`, ""), nil, []string{"#/properties/s/maxLength max-length-increased"}},
	{"minLength added", closed(`"s": {"type": "string"}`, ""), closed(`"s": {"type": "string", "minLength": 1}`, ""), []string{"#/properties/s/minLength min-length-added"}, nil},
	{"pattern added", closed(`"s": {"type": "string"}`, ""), closed(`"s": {"type": "string", "pattern": "^[a-z]+$"}`, ""), []string{"#/properties/s/pattern pattern-added"}, nil},
	{"pattern changed", closed(`"s": {"type": "string", "pattern": "^a"}`, ""), closed(`"s": {"type": "string", "pattern": "^b"}`, ""),
		[]string{"#/properties/s/pattern pattern-changed"}, []string{"#/properties/s/pattern pattern-changed"}},
	{"pattern removed", closed(`"s": {"type": "string", "pattern": "^a"}`, ""), closed(`"s": {"type": "string"}`, ""), nil, []string{"#/properties/s/pattern pattern-removed"}},
	{"format added", closed(`"s": {"type": "string"}`, ""), closed(`"s": {"type": "string", "format": "email"}`, ""), []string{"#/properties/s/format keyword-changed"}, nil},
	// Arrays.
	{"items widened", closed(`"xs": {"type": "array", "items": {"type": "integer"}}`, ""), closed(`"xs": {"type": "array", "items": {"type": "number"}}`, ""), nil, []string{"#/properties/xs/items type-widened"}},
	{"items narrowed", closed(`"xs": {"type": "array", "items": {"type": "number"}}`, ""), closed(`"xs": {"type": "array", "items": {"type": "integer"}}`, ""), []string{"#/properties/xs/items type-narrowed"}, nil},
	{"items added", closed(`"xs": {"type": "array"}`, ""), closed(`"xs": {"type": "array", "items": {"type": "string"}}`, ""), []string{"#/properties/xs/items type-narrowed"}, nil},
	{"maxItems added", closed(`"xs": {"type": "array"}`, ""), closed(`"xs": {"type": "array", "maxItems": 3}`, ""), []string{"#/properties/xs/maxItems max-items-added"}, nil},
	{"minItems decreased", closed(`"xs": {"type": "array", "minItems": 2}`, ""), closed(`"xs": {"type": "array", "minItems": 1}`, ""), nil, []string{"#/properties/xs/minItems min-items-decreased"}},
	{"uniqueItems added", closed(`"xs": {"type": "array"}`, ""), closed(`"xs": {"type": "array", "uniqueItems": true}`, ""), []string{"#/properties/xs unique-items-added"}, nil},
	{"closed tuple gains a position", closed(`"t": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}`, ""),
		closed(`"t": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}], "items": false}`, ""),
		nil, []string{"#/properties/t/prefixItems/2 item-added-to-closed-model"}},
	{"closed tuple loses a position", closed(`"t": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}`, ""),
		closed(`"t": {"type": "array", "prefixItems": [{"type": "string"}], "items": false}`, ""),
		[]string{"#/properties/t/prefixItems/1 item-removed-from-closed-model"}, nil},
	{"tuple position narrowed", closed(`"t": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]}`, ""),
		closed(`"t": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}`, ""), []string{"#/properties/t/prefixItems/1 type-narrowed"}, nil},
	// Nested objects.
	{"nested: remove a property of a closed object", closed(`"c": `+closed(`"name": {"type": "string"}, "email": {"type": "string"}`, ""), ""), closed(`"c": `+closed(`"name": {"type": "string"}`, ""), ""),
		[]string{"#/properties/c/properties/email property-removed-from-closed-model"}, nil},
	{"nested: type changed", closed(`"c": `+closed(`"age": {"type": "integer"}`, ""), ""), closed(`"c": `+closed(`"age": {"type": "string"}`, ""), ""),
		[]string{"#/properties/c/properties/age type-changed"}, []string{"#/properties/c/properties/age type-changed"}},
	{"array of objects: add a required field", closed(`"lines": {"type": "array", "items": `+closed(`"qty": {"type": "integer"}`, `["qty"]`)+`}`, ""),
		closed(`"lines": {"type": "array", "items": `+closed(`"qty": {"type": "integer"}, "sku": {"type": "string"}`, `["qty", "sku"]`)+`}`, ""),
		[]string{"#/properties/lines/items/properties/sku required-added"}, []string{"#/properties/lines/items/properties/sku property-added-to-closed-model"}},
	// $ref.
	{"$defs member widened", `{"$defs": {"money": {"type": "integer"}}, "type": "object", "additionalProperties": false, "properties": {"total": {"$ref": "#/$defs/money"}}}`,
		`{"$defs": {"money": {"type": "number"}}, "type": "object", "additionalProperties": false, "properties": {"total": {"$ref": "#/$defs/money"}}}`,
		nil, []string{"#/properties/total type-widened"}},
	{"inline to $ref of the same", closed(`"total": {"type": "number"}`, ""),
		`{"$defs": {"money": {"type": "number"}}, "type": "object", "additionalProperties": false, "properties": {"total": {"$ref": "#/$defs/money"}}}`, nil, nil},
	{"$ref with a sibling keyword", `{"$defs": {"s": {"type": "string"}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/s"}}}`,
		`{"$defs": {"s": {"type": "string"}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/s", "maxLength": 3}}}`, []string{"#/properties/a/maxLength max-length-added"}, nil},
	{"recursive tree, unchanged", tree(""), tree(""), nil, nil},
	{"recursive tree: name becomes required", tree(""), tree(`"required": ["name"],`), []string{"#/properties/name required-added"}, nil},
	{"mutual recursion through $defs, nested change",
		`{"$ref": "#/$defs/a", "$defs": {"a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}, "n": {"type": "integer"}}}, "b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}}}}`,
		`{"$ref": "#/$defs/a", "$defs": {"a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}, "n": {"type": "number"}}}, "b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}}}}`,
		nil, []string{"#/properties/n type-widened"}},
	// Unions.
	{"anyOf extended", closed(`"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}`, ""), closed(`"v": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}`, ""),
		nil, []string{"#/properties/v union-extended"}},
	{"anyOf narrowed", closed(`"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}`, ""), closed(`"v": {"anyOf": [{"type": "string"}]}`, ""),
		[]string{"#/properties/v union-narrowed"}, nil},
	{"oneOf reordered", closed(`"v": {"oneOf": [{"type": "string"}, {"type": "integer"}]}`, ""), closed(`"v": {"oneOf": [{"type": "integer"}, {"type": "string"}]}`, ""), nil, nil},
	{"type to anyOf holding it", closed(`"v": {"type": "string"}`, ""), closed(`"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}`, ""), nil, []string{"#/properties/v union-extended"}},
	{"allOf of a base and an extension equals the flat schema",
		`{"$defs": {"base": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}, "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"n": {"type": "integer"}}}]}`,
		opened(`"id": {"type": "string"}, "n": {"type": "integer"}`, `["id"]`), nil, nil},
	{"not added", closed(`"s": {"type": "string"}`, ""), closed(`"s": {"type": "string", "not": {"const": "x"}}`, ""), []string{"#/properties/s/not keyword-changed"}, nil},
	// Annotations and no change.
	{"default changed", closed(`"c": {"type": "string", "default": "USD"}`, ""), closed(`"c": {"type": "string", "default": "EUR"}`, ""), nil, nil},
	{"title and description changed", `{"title": "A", "description": "x", "type": "object"}`, `{"title": "B", "description": "y", "type": "object"}`, nil, nil},
	{"identical", closed(`"a": {"type": "string"}`, `["a"]`), closed(`"a": {"type": "string"}`, `["a"]`), nil, nil},
	{"true to an object schema", `true`, `{"type": "object"}`, []string{"# type-narrowed"}, nil},
}

func tree(required string) string {
	return `{"type": "object", ` + required + ` "additionalProperties": false, "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}}}`
}

func compile(t testing.TB, v int, doc string) *Schema {
	t.Helper()
	s, err := Compile("T", v, []byte(doc))
	if err != nil {
		t.Fatalf("compile %s: %v", doc, err)
	}
	return s
}

func rules(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Path+" "+p.Rule)
	}
	return out
}

// TestCompatibilityPairs checks every pair's verdict under BACKWARD,
// FORWARD and FULL, and the exact problems of each direction.
func TestCompatibilityPairs(t *testing.T) {
	if len(pairs) < 60 {
		t.Fatalf("%d pairs, want at least 60", len(pairs))
	}
	for _, tc := range pairs {
		t.Run(tc.name, func(t *testing.T) {
			old, new := compile(t, 1, tc.old), compile(t, 2, tc.new)
			back, fwd := Compare(old, new)
			if got := rules(back); !slices.Equal(got, tc.back) {
				t.Errorf("BACKWARD problems %q, want %q", got, tc.back)
			}
			if got := rules(fwd); !slices.Equal(got, tc.fwd) {
				t.Errorf("FORWARD problems %q, want %q", got, tc.fwd)
			}
			for _, m := range []struct {
				mode Mode
				want int
			}{{Backward, len(tc.back)}, {Forward, len(tc.fwd)}, {Full, len(tc.back) + len(tc.fwd)}, {None, 0}} {
				if got := Check(m.mode, old, new); len(got) != m.want {
					t.Errorf("%s: %d problems %v, want %d", m.mode, len(got), got, m.want)
				}
			}
			for _, p := range append(back, fwd...) {
				if p.Subject != "T" || p.Old != 1 || p.New != 2 || p.Detail == "" {
					t.Errorf("problem %+v lacks its subject, versions or detail", p)
				}
			}
		})
	}
}

// TestTransitive checks 3-version histories whose every step is
// compatible but whose newest version is not compatible with the first.
func TestTransitive(t *testing.T) {
	str := func(def string) string { return `{"type": "string"` + def + `}` }
	for _, tc := range []struct {
		name        string
		history     []string
		plain, tran Mode
		want        []string // problems under tran, "vOLD PATH RULE"
	}{
		{"BACKWARD: a default that is later dropped", []string{
			closed(`"a": {"type": "string"}`, `["a"]`),
			closed(`"a": {"type": "string"}, "b": `+str(`, "default": "x"`), `["a", "b"]`),
			closed(`"a": {"type": "string"}, "b": `+str(""), `["a", "b"]`),
		}, Backward, BackwardTransitive, []string{"v1 #/properties/b required-added"}},
		{"FORWARD: a requirement relaxed in two steps", []string{
			closed(`"b": `+str(""), `["b"]`),
			closed(`"b": `+str(`, "default": "x"`), `["b"]`),
			closed(`"b": `+str(`, "default": "x"`), ""),
		}, Forward, ForwardTransitive, []string{"v1 #/properties/b required-removed"}},
		{"FULL: a partially open model, a default dropped", []string{
			partial(`"a": `+str(""), "", str("")),
			partial(`"a": `+str("")+`, "b": `+str(`, "default": "x"`), `["b"]`, str("")),
			partial(`"a": `+str("")+`, "b": `+str(""), `["b"]`, str("")),
		}, Full, FullTransitive, []string{"v1 #/properties/b required-added"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h []*Schema
			for i, d := range tc.history {
				h = append(h, compile(t, i+1, d))
			}
			for k := 2; k <= 3; k++ {
				if ps := Check(tc.plain, h[:k]...); len(ps) != 0 {
					t.Errorf("%s, v%d: %v", tc.plain, k, ps)
				}
			}
			if ps := Check(tc.tran, h[:2]...); len(ps) != 0 {
				t.Errorf("%s, v2: %v", tc.tran, ps)
			}
			var got []string
			for _, p := range Check(tc.tran, h...) {
				got = append(got, fmt.Sprintf("v%d %s %s", p.Old, p.Path, p.Rule))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s, v3: %q, want %q", tc.tran, got, tc.want)
			}
		})
	}
}

// TestOrderPlaced is the seed's example: v1 → v2 adds currency with
// default "USD" (BACKWARD compatible; a v1 consumer still reads v2 data),
// and renaming total is rejected with the path named.
func TestOrderPlaced(t *testing.T) {
	v1 := closed(`"id": {"type": "string"}, "total": {"type": "number"}`, `["id", "total"]`)
	v2 := closed(`"id": {"type": "string"}, "total": {"type": "number"}, "currency": {"type": "string", "default": "USD"}`, `["id", "total"]`)
	renamed := closed(`"id": {"type": "string"}, "amount": {"type": "number"}, "currency": {"type": "string", "default": "USD"}`, `["id", "amount"]`)
	var r Registry
	if _, err := r.Register("OrderPlaced", []byte(v1)); err != nil {
		t.Fatal(err)
	}
	s2, err := r.Register("OrderPlaced", []byte(v2))
	if err != nil {
		t.Fatalf("v2 is BACKWARD compatible: %v", err)
	}
	// A v1 consumer: its contract (id, total) holds against v2, and v2
	// data is valid v2.
	billing := &Contract{Consumer: "billing", Type: "OrderPlaced", Fields: []Field{
		{Path: "id", Type: Types{"string"}, Required: true}, {Path: "total", Type: Types{"number"}, Required: true}}}
	if ps := billing.Check(s2); len(ps) != 0 {
		t.Errorf("v1 consumer against v2: %v", ps)
	}
	v2data := []byte(`{"id": "ord-1", "total": 42.5, "currency": "EUR"}`)
	if err := s2.Validate(v2data); err != nil {
		t.Error(err)
	}
	// The v1 consumer's own type decodes v2 data (a tolerant reader).
	var v1consumer struct {
		ID    string  `json:"id"`
		Total float64 `json:"total"`
	}
	if err := json.Unmarshal(v2data, &v1consumer); err != nil || v1consumer.ID != "ord-1" || v1consumer.Total != 42.5 {
		t.Errorf("v1 consumer decoding v2: %+v, %v", v1consumer, err)
	}
	_, err = r.Register("OrderPlaced", []byte(renamed))
	ie, ok := err.(*IncompatibleError)
	if !ok {
		t.Fatalf("renaming total: %v, want an *IncompatibleError", err)
	}
	if got := rules(ie.Problems); !slices.Equal(got, []string{"#/properties/amount required-added", "#/properties/total property-removed-from-closed-model"}) {
		t.Errorf("renaming total: %q", got)
	}
	if !strings.Contains(err.Error(), "OrderPlaced v2 -> v3 BACKWARD (breaks readers): #/properties/total: property-removed-from-closed-model") {
		t.Errorf("error text: %v", err)
	}
	if len(r.Versions("OrderPlaced")) != 2 {
		t.Errorf("the refused version was added")
	}
	if ps := billing.Check(compile(t, 3, renamed)); len(ps) != 1 || ps[0].Rule != "contract-field-missing" || ps[0].Path != "#/properties/total" {
		t.Errorf("v1 consumer against the rename: %v", ps)
	}
}

// TestCycles: recursion through allOf and $ref (which the checker
// normalizes into fresh schemas) ends, and so does a loop of references
// with nothing in between.
func TestCycles(t *testing.T) {
	node := func(n string) string {
		return `{"$ref": "#/$defs/node", "$defs": {
			"base": {"type": "object", "properties": {"id": {"type": "string"}}},
			"node": {"allOf": [{"$ref": "#/$defs/base"}], "properties": {"n": {"type": "` + n + `"}, "child": {"$ref": "#/$defs/node", "description": "x"}}}}}`
	}
	back, fwd := Compare(compile(t, 1, node("integer")), compile(t, 2, node("number")))
	// Merged schemas are new objects each time, so the cycle is met one
	// level down: the change is reported there once more, then the walk
	// stops.
	if len(back) != 0 || !slices.Equal(rules(fwd), []string{"#/properties/child/properties/n type-widened", "#/properties/n type-widened"}) {
		t.Errorf("allOf recursion: %v %v", back, fwd)
	}
	loop := `{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}}`
	s := compile(t, 1, loop)
	if b, f := Compare(s, s); len(b)+len(f) != 0 {
		t.Errorf("reference loop: %v %v", b, f)
	}
}
