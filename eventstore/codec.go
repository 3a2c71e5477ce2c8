package eventstore

import (
	"encoding/json"
	"reflect"
	"sort"
	"sync"

	"github.com/polybus/polybus/message"
)

// Codec encodes event data and snapshots.
type Codec interface {
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, a non-nil pointer.
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec: encoding/json.
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Registry maps event type names to Go types, both ways. The zero value is
// empty and ready; it is safe for concurrent use.
type Registry struct {
	mu     sync.RWMutex
	byName map[string]reflect.Type
	byType map[reflect.Type]string
}

// Register records that events named name decode to values of T. It fails
// with message.ErrInvalidArgument when name is empty or already taken by
// another type, or T is already registered under another name.
func Register[T any](r *Registry, name string) error {
	return r.Register(name, reflect.TypeFor[T]())
}

// Register is the non-generic form of the package function Register.
func (r *Registry) Register(name string, t reflect.Type) error {
	const op = "eventstore: register"
	if name == "" || t == nil {
		return message.Errorf(message.InvalidArgument, op, "empty type name or nil type")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byName == nil {
		r.byName = map[string]reflect.Type{}
		r.byType = map[reflect.Type]string{}
	}
	if old, ok := r.byName[name]; ok && old != t {
		return message.Errorf(message.InvalidArgument, op, "event type %q is already registered as %s", name, old)
	}
	if old, ok := r.byType[t]; ok && old != name {
		return message.Errorf(message.InvalidArgument, op, "%s is already registered as %q", t, old)
	}
	r.byName[name] = t
	r.byType[t] = name
	return nil
}

// NameOf returns the name v's type is registered under (a pointer's
// element type counts as the type).
func (r *Registry) NameOf(v any) (string, bool) {
	if r == nil || v == nil {
		return "", false
	}
	t := reflect.TypeOf(v)
	r.mu.RLock()
	defer r.mu.RUnlock()
	if n, ok := r.byType[t]; ok {
		return n, true
	}
	if t.Kind() == reflect.Pointer {
		n, ok := r.byType[t.Elem()]
		return n, ok
	}
	return "", false
}

// TypeOf returns the type registered under name.
func (r *Registry) TypeOf(name string) (reflect.Type, bool) {
	if r == nil {
		return nil, false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.byName[name]
	return t, ok
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ns := make([]string, 0, len(r.byName))
	for n := range r.byName {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}
