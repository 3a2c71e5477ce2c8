package schema

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// enumValues returns a schema's const (as one value) or enum values.
func enumValues(m map[string]any) ([]any, bool) {
	if v, ok := m["const"]; ok {
		return []any{v}, true
	}
	if vs, ok := m["enum"].([]any); ok {
		return vs, true
	}
	return nil, false
}

func containsValue(vs []any, v any) bool {
	for _, x := range vs {
		if equalJSON(x, v) {
			return true
		}
	}
	return false
}

// equalJSON compares decoded JSON values, numbers by value (1 == 1.0).
func equalJSON(a, b any) bool {
	fa, aok := number(a)
	fb, bok := number(b)
	if aok || bok {
		return aok && bok && fa == fb
	}
	return reflect.DeepEqual(a, b)
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func showAll(vs []any) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = show(v)
	}
	return strings.Join(out, ", ")
}

// number reads a JSON number (json.Number, as the schema decoder gives,
// or a float64).
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	case int:
		return float64(x), true
	}
	return 0, false
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// boundOf returns a schema's bound kw (or its exclusive form, whichever
// is stricter) and whether it is exclusive.
func boundOf(m map[string]any, kw, exclusive string, lower bool) (float64, bool, bool) {
	v, ok := number(m[kw])
	x, xok := 0.0, false
	if exclusive != "" {
		x, xok = number(m[exclusive])
	}
	switch {
	case ok && xok:
		if (lower && x >= v) || (!lower && x <= v) {
			return x, true, true
		}
		return v, false, true
	case xok:
		return x, true, true
	case ok:
		return v, false, true
	}
	return 0, false, false
}

// kebab turns a keyword into a rule name part: maxLength → max-length.
func kebab(kw string) string {
	var b strings.Builder
	for _, r := range kw {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('-')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func orTrue(v any) any {
	if v == nil {
		return true
	}
	return v
}

func toSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func stringList(v any) []string {
	var out []string
	for _, x := range toSlice(v) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func stringSet(v any) map[string]bool {
	out := map[string]bool{}
	for _, s := range stringList(v) {
		out[s] = true
	}
	return out
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

// escape escapes a property name as a JSON pointer token.
func escape(name string) string {
	return strings.ReplaceAll(strings.ReplaceAll(name, "~", "~0"), "/", "~1")
}

var patterns sync.Map // string → *regexp.Regexp (nil when it does not compile)

// matches reports whether name matches the patternProperties pattern
// pat (RE2: close enough to ECMA 262 for property name patterns).
func matches(pat, name string) bool {
	v, ok := patterns.Load(pat)
	if !ok {
		re, err := regexp.Compile(pat)
		if err != nil {
			re = nil
		}
		v, _ = patterns.LoadOrStore(pat, re)
	}
	re, _ := v.(*regexp.Regexp)
	return re != nil && re.MatchString(name)
}
