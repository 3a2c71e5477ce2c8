package schema

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/polybus/polybus/message"
)

// Mode is a subject's compatibility mode, with Confluent Schema
// Registry's meanings.
type Mode string

// The compatibility modes. BACKWARD is the default, as in Confluent
// Schema Registry.
const (
	// None checks nothing.
	None Mode = "NONE"
	// Backward: consumers using the new schema can read data produced
	// with the previous one. Upgrade consumers first.
	Backward Mode = "BACKWARD"
	// Forward: data produced with the new schema can be read by consumers
	// using the previous one. Upgrade producers first.
	Forward Mode = "FORWARD"
	// Full is Backward and Forward.
	Full Mode = "FULL"
	// BackwardTransitive is Backward against every earlier version.
	BackwardTransitive Mode = "BACKWARD_TRANSITIVE"
	// ForwardTransitive is Forward against every earlier version.
	ForwardTransitive Mode = "FORWARD_TRANSITIVE"
	// FullTransitive is Full against every earlier version.
	FullTransitive Mode = "FULL_TRANSITIVE"
)

// Modes lists every mode.
var Modes = []Mode{None, Backward, Forward, Full, BackwardTransitive, ForwardTransitive, FullTransitive}

// ParseMode reads a mode name, in any case. Errors: InvalidArgument for
// an unknown name.
func ParseMode(s string) (Mode, error) {
	m := Mode(strings.ToUpper(strings.TrimSpace(s)))
	for _, k := range Modes {
		if m == k {
			return m, nil
		}
	}
	return "", message.Errorf(message.InvalidArgument, "schema: mode", "unknown compatibility mode %q: want one of NONE, BACKWARD, FORWARD, FULL and their _TRANSITIVE forms", s)
}

func (m Mode) backward() bool {
	return m == Backward || m == Full || m == BackwardTransitive || m == FullTransitive
}

func (m Mode) forward() bool {
	return m == Forward || m == Full || m == ForwardTransitive || m == FullTransitive
}

func (m Mode) transitive() bool {
	return m == BackwardTransitive || m == ForwardTransitive || m == FullTransitive
}

// Direction says which side of a change a Problem breaks.
type Direction int

const (
	// NewReadsOld: a consumer using the new schema reads data produced
	// with the old one (the BACKWARD half of a mode). A problem breaks
	// readers: consumers cannot be upgraded first.
	NewReadsOld Direction = iota + 1
	// OldReadsNew: a consumer using the old schema reads data produced
	// with the new one (the FORWARD half). A problem breaks writers:
	// producers cannot be upgraded first.
	OldReadsNew
)

// String returns "BACKWARD" or "FORWARD", the half of a mode.
func (d Direction) String() string {
	if d == OldReadsNew {
		return "FORWARD"
	}
	return "BACKWARD"
}

// Breaks returns "readers" (NewReadsOld) or "writers" (OldReadsNew).
func (d Direction) Breaks() string {
	if d == OldReadsNew {
		return "writers"
	}
	return "readers"
}

// Problem is one incompatibility between two versions of a schema, or a
// consumer contract a schema breaks.
type Problem struct {
	// Subject is the event type.
	Subject string
	// Old and New are the versions compared (0 when unknown, as in a diff
	// of two files). For a contract, New is the schema's version.
	Old, New int
	// Direction is the half of the mode that fails (0 for a contract).
	Direction Direction
	// Path is the JSON pointer, in the schema, of what changed, such as
	// "#/properties/total" (through $ref, the path of the instance's
	// structure, not of $defs).
	Path string
	// Rule is a stable identifier of the rule that fails, such as
	// "property-removed-from-closed-model" (see the package doc). It names
	// the change from the old schema to the new.
	Rule string
	// Detail says what, in words.
	Detail string
	// Contract names the contract file (relative to the registry
	// directory) and Consumer its consumer, for a contract problem.
	Contract, Consumer string
}

// String is one line: subject, versions, half, path, rule and detail.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Subject)
	switch {
	case p.Contract != "":
		fmt.Fprintf(&b, " v%d contract of %s", p.New, p.Consumer)
	case p.Old != 0 || p.New != 0:
		fmt.Fprintf(&b, " v%d -> v%d %s (breaks %s)", p.Old, p.New, p.Direction, p.Direction.Breaks())
	default:
		fmt.Fprintf(&b, " %s (breaks %s)", p.Direction, p.Direction.Breaks())
	}
	fmt.Fprintf(&b, ": %s: %s", p.Path, p.Rule)
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	return strings.TrimPrefix(b.String(), " ")
}

// Compare checks old against new in both directions: backward holds the
// problems of a consumer using new reading data produced with old,
// forward those of a consumer using old reading data produced with new.
// BACKWARD holds when backward is empty, FORWARD when forward is, FULL
// when both are.
func Compare(old, new *Schema) (backward, forward []Problem) {
	backward = compare(new.doc, old.doc, NewReadsOld)
	forward = compare(old.doc, new.doc, OldReadsNew)
	for _, ps := range [][]Problem{backward, forward} {
		for i := range ps {
			ps[i].Subject, ps[i].Old, ps[i].New = new.Type, old.Version, new.Version
		}
	}
	return backward, forward
}

// Check checks the last of history, the new version, against the
// earlier ones under mode: against the one before it, or against all of
// them for a transitive mode. history is in version order.
func Check(mode Mode, history ...*Schema) []Problem {
	if len(history) < 2 || mode == None {
		return nil
	}
	n := len(history) - 1
	newest := history[n]
	prev := history[n-1 : n]
	if mode.transitive() {
		prev = history[:n]
	}
	var out []Problem
	for i := len(prev) - 1; i >= 0; i-- {
		b, f := Compare(prev[i], newest)
		if mode.backward() {
			out = append(out, b...)
		}
		if mode.forward() {
			out = append(out, f...)
		}
	}
	return out
}

// compare returns what reader rejects of what writer may produce.
func compare(reader, writer any, dir Direction) []Problem {
	c := &checker{dir: dir, rRoot: reader, wRoot: writer, active: map[[2]uintptr]bool{}}
	c.check(reader, writer, "#")
	return c.out
}

// checker walks a reader and a writer schema side by side. Every finding
// is a place where the writer admits an instance the reader rejects.
type checker struct {
	dir          Direction
	rRoot, wRoot any
	// active holds the pairs of schema objects being compared on the
	// current path: a $ref cycle meets a pair again and stops there (the
	// pair is compatible unless something outside the cycle says not).
	active map[[2]uintptr]bool
	depth  int
	out    []Problem
}

// maxDepth bounds the nesting the checker walks.
const maxDepth = 256

func mapPointer(s any) uintptr {
	if m, ok := s.(map[string]any); ok && m != nil {
		return reflect.ValueOf(m).Pointer()
	}
	return 0
}

// report adds a problem. newStricter is the rule's name when the new
// schema is the reader (a BACKWARD finding: the change narrowed what is
// accepted), oldStricter when the old one is (FORWARD: it widened).
func (c *checker) report(path, newStricter, oldStricter, format string, args ...any) {
	rule := newStricter
	if c.dir == OldReadsNew {
		rule = oldStricter
	}
	c.out = append(c.out, Problem{Direction: c.dir, Path: path, Rule: rule, Detail: fmt.Sprintf(format, args...)})
}

// side names the reader and writer for details: "new" or "old".
func (c *checker) sides() (reader, writer string) {
	if c.dir == OldReadsNew {
		return "old", "new"
	}
	return "new", "old"
}

// covers reports whether reader accepts all that writer does, without
// reporting.
func (c *checker) covers(reader, writer any, path string) bool {
	return len(c.trial(reader, writer, path)) == 0
}

// trial returns the problems of reader against writer without reporting
// them.
func (c *checker) trial(reader, writer any, path string) []Problem {
	sub := &checker{dir: c.dir, rRoot: c.rRoot, wRoot: c.wRoot, active: c.active, depth: c.depth}
	sub.check(reader, writer, path)
	return sub.out
}

func (c *checker) check(r, w any, path string) {
	// The pair is keyed on the schemas as they stand in the documents,
	// before normalize (which builds new maps for allOf and $ref
	// siblings), so a cycle through them is met again.
	key := [2]uintptr{mapPointer(r), mapPointer(w)}
	if key[0] != 0 && key[1] != 0 {
		if c.active[key] {
			return
		}
		c.active[key] = true
		defer delete(c.active, key)
	}
	if c.depth++; c.depth > maxDepth {
		c.depth--
		return // a cycle through freshly merged schemas: give up here
	}
	defer func() { c.depth-- }()
	r = normalize(c.rRoot, r)
	w = normalize(c.wRoot, w)
	// And on what they resolve to, which is the documents' own map when
	// a plain $ref was followed: a cycle is then met one step sooner.
	if nkey := [2]uintptr{mapPointer(r), mapPointer(w)}; nkey != key && nkey[0] != 0 && nkey[1] != 0 {
		if c.active[nkey] {
			return
		}
		c.active[nkey] = true
		defer delete(c.active, nkey)
	}
	if b, ok := w.(bool); ok && !b {
		return // the writer writes nothing here
	}
	if b, ok := r.(bool); ok {
		if !b {
			c.report(path, "schema-false", "schema-false", "the %s schema accepts nothing here", first(c.sides()))
		}
		return
	}
	rm, _ := r.(map[string]any)
	wm, _ := w.(map[string]any)
	if len(rm) == 0 {
		return
	}
	// Unions: every branch the writer may take must be read by one of the
	// reader's branches.
	if branches := union(wm); branches != nil {
		for i, b := range branches {
			ps := c.trial(rm, normalize(c.wRoot, merged(wm, b, c.wRoot)), path)
			if len(ps) > 0 && ps[0].Path == path {
				// The branch as a whole is not read: name the union.
				c.report(path, "union-narrowed", "union-extended", "branch %d of the %s schema's anyOf/oneOf is not read: %s", i, second(c.sides()), ps[0].Detail)
				continue
			}
			c.out = append(c.out, ps...)
		}
		return
	}
	if branches := union(rm); branches != nil {
		for _, b := range branches {
			if c.covers(normalize(c.rRoot, merged(rm, b, c.rRoot)), wm, path) {
				return
			}
		}
		rd, _ := c.sides()
		c.report(path, "union-narrowed", "union-extended", "no branch of the %s schema's anyOf/oneOf reads what the other writes", rd)
		return
	}

	rk, wk := kinds(rm), kinds(wm)
	rd, wr := c.sides()
	if wk&^rk != 0 {
		if wk&rk == 0 {
			c.report(path, "type-changed", "type-changed", "type %s (%s) is now %s (%s)", kindNames(wk), wr, kindNames(rk), rd)
			return
		}
		c.report(path, "type-narrowed", "type-widened", "the %s schema reads %s, the %s writes %s", rd, kindNames(rk), wr, kindNames(wk))
	}
	common := rk & wk
	c.values(rm, wm, path)
	if common&kNumber != 0 {
		c.bound(rm, wm, path, "minimum", "exclusiveMinimum", true)
		c.bound(rm, wm, path, "maximum", "exclusiveMaximum", false)
		c.multipleOf(rm, wm, path)
	}
	if common&kString != 0 {
		c.bound(rm, wm, path, "minLength", "", true)
		c.bound(rm, wm, path, "maxLength", "", false)
		c.same(rm, wm, path, "pattern")
	}
	if common&kArray != 0 {
		c.bound(rm, wm, path, "minItems", "", true)
		c.bound(rm, wm, path, "maxItems", "", false)
		if rm["uniqueItems"] == true && wm["uniqueItems"] != true {
			c.report(path, "unique-items-added", "unique-items-removed", "the %s schema wants unique items", rd)
		}
		c.items(rm, wm, path)
	}
	if common&kObject != 0 {
		c.bound(rm, wm, path, "minProperties", "", true)
		c.bound(rm, wm, path, "maxProperties", "", false)
		c.object(rm, wm, path)
	}
	// Keywords the checker does not reason about: a change is reported,
	// to be safe, when the reader has one the writer lacks or differs on.
	for _, k := range []string{"not", "if", "then", "else", "contains", "minContains", "maxContains", "propertyNames",
		"dependentRequired", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems", "format"} {
		if v, ok := rm[k]; ok && !reflect.DeepEqual(v, wm[k]) {
			c.report(path+"/"+k, "keyword-changed", "keyword-changed", "%s differs (the checker does not reason about it)", k)
		}
	}
}

func first(a, _ string) string  { return a }
func second(_, b string) string { return b }

// values checks const and enum.
func (c *checker) values(rm, wm map[string]any, path string) {
	rv, rok := enumValues(rm)
	if !rok {
		return
	}
	rd, wr := c.sides()
	wv, wok := enumValues(wm)
	_, rconst := rm["const"]
	if !wok {
		if rconst {
			c.report(path, "const-added", "const-removed", "the %s schema wants the value %s, the %s writes any", rd, show(rv[0]), wr)
		} else {
			c.report(path, "enum-added", "enum-removed", "the %s schema wants one of %s, the %s writes any value", rd, showAll(rv), wr)
		}
		return
	}
	var missing []any
	for _, v := range wv {
		if !containsValue(rv, v) {
			missing = append(missing, v)
		}
	}
	if len(missing) == 0 {
		return
	}
	if rconst {
		c.report(path, "const-changed", "const-changed", "the %s schema wants %s, the %s writes %s", rd, show(rv[0]), wr, showAll(missing))
		return
	}
	c.report(path, "enum-narrowed", "enum-extended", "the %s schema lacks %s", rd, showAll(missing))
}

// bound compares a lower (or upper) bound keyword, with its exclusive
// form when there is one.
func (c *checker) bound(rm, wm map[string]any, path, kw, exclusive string, lower bool) {
	rb, rx, rok := boundOf(rm, kw, exclusive, lower)
	if !rok {
		return
	}
	wb, wx, wok := boundOf(wm, kw, exclusive, lower)
	rd, _ := c.sides()
	name := kebab(kw)
	if !wok {
		c.report(path+"/"+kw, name+"-added", name+"-removed", "the %s schema has %s %s", rd, kw, num(rb))
		return
	}
	stricter := rb > wb || (rb == wb && rx && !wx)
	if !lower {
		stricter = rb < wb || (rb == wb && rx && !wx)
	}
	if !stricter {
		return
	}
	if lower {
		c.report(path+"/"+kw, name+"-increased", name+"-decreased", "%s %s (%s) against %s", kw, num(rb), rd, num(wb))
	} else {
		c.report(path+"/"+kw, name+"-decreased", name+"-increased", "%s %s (%s) against %s", kw, num(rb), rd, num(wb))
	}
}

func (c *checker) multipleOf(rm, wm map[string]any, path string) {
	rv, ok := number(rm["multipleOf"])
	if !ok || rv == 0 {
		return
	}
	rd, _ := c.sides()
	wv, ok := number(wm["multipleOf"])
	if !ok {
		c.report(path+"/multipleOf", "multiple-of-added", "multiple-of-removed", "the %s schema wants multiples of %s", rd, num(rv))
		return
	}
	if q := wv / rv; q != math.Trunc(q) {
		c.report(path+"/multipleOf", "multiple-of-changed", "multiple-of-changed", "multiples of %s (%s) against %s", num(rv), rd, num(wv))
	}
}

// same reports a keyword the reader has and the writer lacks or differs
// on (pattern).
func (c *checker) same(rm, wm map[string]any, path, kw string) {
	rv, ok := rm[kw]
	if !ok {
		return
	}
	rd, _ := c.sides()
	wv, ok := wm[kw]
	name := kebab(kw)
	switch {
	case !ok:
		c.report(path+"/"+kw, name+"-added", name+"-removed", "the %s schema has %s %s", rd, kw, show(rv))
	case !reflect.DeepEqual(rv, wv):
		c.report(path+"/"+kw, name+"-changed", name+"-changed", "%s %s (%s) against %s", kw, show(rv), rd, show(wv))
	}
}

// items compares array items: prefixItems position by position, then
// items for the positions after them.
func (c *checker) items(rm, wm map[string]any, path string) {
	rp, _ := rm["prefixItems"].([]any)
	wp, _ := wm["prefixItems"].([]any)
	rItems, wItems := orTrue(rm["items"]), orTrue(wm["items"])
	n := max(len(rp), len(wp))
	for i := range n {
		p := path + "/prefixItems/" + strconv.Itoa(i)
		var r, w any = rItems, wItems
		if i < len(rp) {
			r = rp[i]
		}
		if i < len(wp) {
			w = wp[i]
		}
		if r == false && w != false {
			// A closed tuple (items: false) on the reader's side only.
			c.report(p, "item-removed-from-closed-model", "item-added-to-closed-model",
				"the %s schema's tuple has no position %d (items: false)", first(c.sides()), i)
			continue
		}
		c.check(r, w, p)
	}
	if _, ok := rm["items"]; ok {
		c.check(rItems, wItems, path+"/items")
	}
}

// object compares required, properties and the content model
// (additionalProperties, patternProperties).
func (c *checker) object(rm, wm map[string]any, path string) {
	rd, wr := c.sides()
	rProps, _ := rm["properties"].(map[string]any)
	wProps, _ := wm["properties"].(map[string]any)
	wReq := stringSet(wm["required"])
	for _, name := range stringList(rm["required"]) {
		if wReq[name] {
			continue
		}
		p := path + "/properties/" + escape(name)
		if s, ok := normalize(c.rRoot, rProps[name]).(map[string]any); ok {
			if _, ok := s["default"]; ok {
				continue // a reader fills in the default
			}
		}
		c.report(p, "required-added", "required-removed", "the %s schema requires %q, the %s does not", rd, name, wr)
	}
	for _, name := range sortedKeys(wProps) {
		p := path + "/properties/" + escape(name)
		if r, ok := rProps[name]; ok {
			c.check(r, wProps[name], p)
			continue
		}
		// Written by the writer, not declared by the reader: the reader's
		// content model decides.
		r, model := c.additional(rm, c.rRoot, name)
		switch model {
		case modelOpen:
		case modelClosed:
			c.report(p, "property-removed-from-closed-model", "property-added-to-closed-model",
				"%q is not in the %s schema, whose content model is closed (additionalProperties: false)", name, rd)
		case modelPartial:
			if !c.covers(r, wProps[name], p) {
				c.report(p, "property-removed-not-covered", "property-added-not-covered",
					"%q is not in the %s schema, and its additionalProperties/patternProperties do not read the %s's %q", name, rd, wr, name)
			}
		}
	}
	for _, name := range sortedKeys(rProps) {
		if _, ok := wProps[name]; ok {
			continue
		}
		p := path + "/properties/" + escape(name)
		// Declared by the reader only: what the writer may put there is
		// what its content model allows.
		w, model := c.additional(wm, c.wRoot, name)
		switch model {
		case modelClosed:
		case modelOpen:
			if !c.covers(rProps[name], true, p) {
				c.report(p, "property-added-to-open-model", "property-removed-from-open-model",
					"%q is not in the %s schema, whose content model is open: its data may hold any %q", name, wr, name)
			}
		case modelPartial:
			if !c.covers(rProps[name], w, p) {
				c.report(p, "property-added-not-covered", "property-removed-not-covered",
					"%q is not in the %s schema, and what its additionalProperties/patternProperties allow there the %s does not read", name, wr, rd)
			}
		}
	}
	// Any other name: the reader's additionalProperties against the
	// writer's.
	rAdd, rHas := rm["additionalProperties"]
	if !rHas || rAdd == true {
		return
	}
	wAdd, wHas := wm["additionalProperties"]
	if !wHas {
		wAdd = true
	}
	if rAdd == false && wAdd != false {
		c.report(path+"/additionalProperties", "content-model-closed", "content-model-opened",
			"the %s schema allows no other properties, the %s does", rd, wr)
		return
	}
	c.check(rAdd, wAdd, path+"/additionalProperties")
}

type contentModel int

const (
	modelOpen contentModel = iota
	modelClosed
	modelPartial
)

// additional returns the schema that m applies to a property name it
// does not declare, and its content model.
func (c *checker) additional(m map[string]any, root any, name string) (any, contentModel) {
	if pp, ok := m["patternProperties"].(map[string]any); ok {
		for _, pat := range sortedKeys(pp) {
			if matches(pat, name) {
				return pp[pat], modelPartial
			}
		}
	}
	a, ok := m["additionalProperties"]
	switch {
	case !ok || a == true:
		return true, modelOpen
	case a == false:
		return false, modelClosed
	}
	if s, ok := normalize(root, a).(map[string]any); ok && len(s) == 0 {
		return true, modelOpen
	}
	return a, modelPartial
}

// Kinds of JSON value, a bit each; number is integer plus the rest.
const (
	kNull = 1 << iota
	kBoolean
	kObject
	kArray
	kInteger
	kFraction
	kString
	kNumber = kInteger | kFraction
	kAll    = kNull | kBoolean | kObject | kArray | kNumber | kString
)

var kindByName = map[string]int{"null": kNull, "boolean": kBoolean, "object": kObject, "array": kArray,
	"integer": kInteger, "number": kNumber, "string": kString}

// kinds returns the kinds a schema admits: its type, else the kinds of
// its const or enum values, else all.
func kinds(m map[string]any) int {
	switch t := m["type"].(type) {
	case string:
		return kindByName[t]
	case []any:
		k := 0
		for _, x := range t {
			if s, ok := x.(string); ok {
				k |= kindByName[s]
			}
		}
		return k
	}
	if vs, ok := enumValues(m); ok {
		k := 0
		for _, v := range vs {
			k |= kindOf(v)
		}
		return k
	}
	return kAll
}

func kindOf(v any) int {
	switch v.(type) {
	case nil:
		return kNull
	case bool:
		return kBoolean
	case map[string]any:
		return kObject
	case []any:
		return kArray
	case string:
		return kString
	}
	if f, ok := number(v); ok && f == math.Trunc(f) {
		return kInteger
	}
	return kFraction
}

func kindNames(k int) string {
	var out []string
	for _, n := range []string{"null", "boolean", "object", "array", "number", "integer", "string"} {
		b := kindByName[n]
		if k&b == b && (n != "integer" || k&kNumber != kNumber) {
			out = append(out, n)
		}
	}
	if len(out) == 1 {
		return out[0]
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// normalize follows local $refs (with siblings applied over the target)
// and merges allOf members into one object.
func normalize(root, s any) any { return normalizeDepth(root, s, 0) }

func normalizeDepth(root, s any, depth int) any {
	if depth > 32 {
		return true // a $ref/allOf loop with no structure in between
	}
	for range 32 {
		m, ok := s.(map[string]any)
		if !ok {
			return s
		}
		if ref, ok := m["$ref"].(string); ok {
			target := resolvePointer(root, ref)
			if !hasSiblings(m) {
				s = target
				continue
			}
			rest := make(map[string]any, len(m))
			for k, v := range m {
				if !annotation[k] {
					rest[k] = v
				}
			}
			s = mergeInto(normalizeDepth(root, target, depth+1), rest)
			continue
		}
		if all, ok := m["allOf"].([]any); ok {
			out := make(map[string]any, len(m))
			for k, v := range m {
				if k != "allOf" {
					out[k] = v
				}
			}
			for _, member := range all {
				out = mergeInto(normalizeDepth(root, member, depth+1), out)
			}
			return out
		}
		return m
	}
	return s
}

// annotation holds the keywords that do not constrain an instance where
// they stand (beside a $ref).
var annotation = map[string]bool{"$ref": true, "$defs": true, "definitions": true, "$schema": true, "$id": true,
	"$comment": true, "title": true, "description": true, "examples": true}

func hasSiblings(m map[string]any) bool {
	for k := range m {
		if !annotation[k] {
			return true
		}
	}
	return false
}

// mergeInto returns base with over's keywords applied: properties are
// merged, required lists joined, other keywords of over win.
func mergeInto(base any, over map[string]any) map[string]any {
	out := map[string]any{}
	if b, ok := base.(map[string]any); ok {
		for k, v := range b {
			out[k] = v
		}
	} else if base == false {
		return map[string]any{"not": map[string]any{}}
	}
	for k, v := range over {
		switch k {
		case "properties":
			props := map[string]any{}
			if bp, ok := out[k].(map[string]any); ok {
				for n, s := range bp {
					props[n] = s
				}
			}
			if op, ok := v.(map[string]any); ok {
				for n, s := range op {
					props[n] = s
				}
			}
			out[k] = props
		case "required":
			seen := stringSet(out[k])
			req := append([]any(nil), toSlice(out[k])...)
			for _, n := range stringList(v) {
				if !seen[n] {
					req = append(req, n)
				}
			}
			out[k] = req
		default:
			out[k] = v
		}
	}
	return out
}

// merged applies a union branch over the keywords beside the union.
func merged(m map[string]any, branch any, root any) any {
	rest := make(map[string]any, len(m))
	for k, v := range m {
		if k != "anyOf" && k != "oneOf" {
			rest[k] = v
		}
	}
	if len(rest) == 0 {
		return branch
	}
	return mergeInto(rest, mapOf(normalize(root, branch)))
}

func mapOf(s any) map[string]any {
	if m, ok := s.(map[string]any); ok {
		return m
	}
	if s == false {
		return map[string]any{"not": map[string]any{}}
	}
	return map[string]any{}
}

// union returns the branches of m's anyOf or oneOf (oneOf is read as
// anyOf: the checker does not prove exclusivity).
func union(m map[string]any) []any {
	if b, ok := m["anyOf"].([]any); ok {
		return b
	}
	if b, ok := m["oneOf"].([]any); ok {
		return b
	}
	return nil
}

// resolvePointer resolves a local reference ("#", "#/$defs/x"); anything
// else resolves to true (Compile refuses remote references).
func resolvePointer(root any, ref string) any {
	if !strings.HasPrefix(ref, "#") {
		return true
	}
	cur := root
	for _, tok := range strings.Split(strings.TrimPrefix(ref, "#"), "/")[1:] {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch x := cur.(type) {
		case map[string]any:
			cur = x[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return true
			}
			cur = x[i]
		default:
			return true
		}
	}
	if cur == nil {
		return true
	}
	return cur
}
