package schema

import (
	"bytes"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/polybus/polybus/message"
)

// Contract is a consumer-driven contract: the fields a consumer reads
// from an event type. The producer's check ([Registry.Check], polybus
// schema check) verifies every contract against the type's newest schema.
//
// The file format (YAML; unknown keys are errors):
//
//	consumer: billing          # who reads
//	type: OrderPlaced          # the event type
//	fields:
//	  - path: id               # dotted; a segment ending in [] is an array's items
//	    type: string           # a JSON Schema type, or a list of them
//	    required: true         # the consumer needs the field in every event
//	  - path: lines[].sku
//	    type: string
//	  - path: total
//	    type: number           # integer data is a number too
type Contract struct {
	// File is where the contract came from (relative to the registry
	// directory), for problems.
	File string `yaml:"-"`
	// Consumer names the consumer.
	Consumer string `yaml:"consumer"`
	// Type is the event type it reads.
	Type string `yaml:"type"`
	// Fields are what it reads.
	Fields []Field `yaml:"fields"`
}

// Field is one field a consumer reads.
type Field struct {
	// Path is the field's path: property names joined by dots; a name
	// followed by [] steps into the array's items ("lines[].sku").
	Path string `yaml:"path"`
	// Type is the JSON Schema types the consumer accepts ("number",
	// ["string", "null"]); empty accepts any.
	Type Types `yaml:"type"`
	// Required: the consumer needs the field present in every event, so
	// the schema must require it (or give it a default) at every level.
	Required bool `yaml:"required"`
}

// Types is one JSON Schema type name or a list of them.
type Types []string

// UnmarshalYAML reads a type name or a list of names.
func (t *Types) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*t = Types{n.Value}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*t = list
	return nil
}

// ParseContract parses a contract file; file names it in errors and
// problems. Errors: InvalidArgument for bad YAML, an unknown key, a
// missing consumer, type or field path, or an unknown type name.
func ParseContract(file string, raw []byte) (*Contract, error) {
	const op = "schema: contract"
	d := yaml.NewDecoder(bytes.NewReader(raw))
	d.KnownFields(true)
	c := &Contract{File: file}
	if err := d.Decode(c); err != nil {
		return nil, message.Errorf(message.InvalidArgument, op, "%s: %v", file, err)
	}
	if c.Consumer == "" || c.Type == "" || len(c.Fields) == 0 {
		return nil, message.Errorf(message.InvalidArgument, op, "%s: want consumer, type and at least one field", file)
	}
	for _, f := range c.Fields {
		if f.Path == "" || strings.Contains(f.Path, "..") {
			return nil, message.Errorf(message.InvalidArgument, op, "%s: field path %q", file, f.Path)
		}
		for _, t := range f.Type {
			if _, ok := kindByName[t]; !ok {
				return nil, message.Errorf(message.InvalidArgument, op, "%s: field %s: unknown type %q", file, f.Path, t)
			}
		}
	}
	return c, nil
}

// Check verifies the contract against s: each field is declared, of a
// type the consumer accepts, and required where the consumer needs it.
func (c *Contract) Check(s *Schema) []Problem {
	var out []Problem
	for _, f := range c.Fields {
		if p, ok := c.checkField(s, f); !ok {
			p.Subject, p.New, p.Contract, p.Consumer = s.Type, s.Version, c.File, c.Consumer
			out = append(out, p)
		}
	}
	return out
}

func (c *Contract) checkField(s *Schema, f Field) (Problem, bool) {
	node := normalize(s.doc, s.doc)
	path := "#"
	segs := strings.Split(f.Path, ".")
	for i, seg := range segs {
		name, array := strings.CutSuffix(seg, "[]")
		m, _ := node.(map[string]any)
		props, _ := m["properties"].(map[string]any)
		path += "/properties/" + escape(name)
		prop, ok := props[name]
		if !ok {
			return Problem{Path: path, Rule: "contract-field-missing",
				Detail: fmt.Sprintf("consumer %s reads %s, which the schema does not declare", c.Consumer, f.Path)}, false
		}
		node = normalize(s.doc, prop)
		if f.Required && !stringSet(m["required"])[name] {
			if pm, ok := node.(map[string]any); !ok || pm["default"] == nil {
				return Problem{Path: path, Rule: "contract-field-optional",
					Detail: fmt.Sprintf("consumer %s needs %s in every event, but the schema does not require %q", c.Consumer, f.Path, name)}, false
			}
		}
		if array {
			pm, _ := node.(map[string]any)
			if kinds(pm)&^kArray != 0 {
				return Problem{Path: path, Rule: "contract-type-mismatch",
					Detail: fmt.Sprintf("consumer %s reads %s as an array, the schema allows %s", c.Consumer, seg, kindNames(kinds(pm)))}, false
			}
			path += "/items"
			node = normalize(s.doc, orTrue(pm["items"]))
		}
		if i == len(segs)-1 && len(f.Type) > 0 {
			want := 0
			for _, t := range f.Type {
				want |= kindByName[t]
			}
			fm, _ := node.(map[string]any)
			if got := kinds(fm); got&^want != 0 {
				return Problem{Path: path, Rule: "contract-type-mismatch",
					Detail: fmt.Sprintf("consumer %s reads %s as %s, the schema allows %s", c.Consumer, f.Path, kindNames(want), kindNames(got))}, false
			}
		}
	}
	return Problem{}, true
}
