package schema

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"

	"github.com/polybus/polybus/message"
)

// UpcastFunc brings an event, decoded as a JSON object (numbers as
// json.Number), from one version to the next, in place: add a field with
// its default, rename one, split one.
type UpcastFunc func(event map[string]any) error

// Upcasters holds, per event type, a chain of UpcastFuncs: v1 → v2 → v3
// ... The zero value is empty and ready; it is safe for concurrent use.
// It implements eventstore.Upcaster and eventstore.VersionStamper.
type Upcasters struct {
	mu     sync.RWMutex
	chains map[string][]UpcastFunc // chains[typ][i] brings v(i+1) to v(i+2)
}

// Register adds fn, which brings typ's events from version from to
// from+1. Register the steps in order: from 1, then 2, and so on.
// Errors: InvalidArgument for a nil fn, an empty type or a step out of
// order.
func (u *Upcasters) Register(typ string, from int, fn UpcastFunc) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.chains == nil {
		u.chains = map[string][]UpcastFunc{}
	}
	if typ == "" || fn == nil || from != len(u.chains[typ])+1 {
		return message.Errorf(message.InvalidArgument, "schema: upcaster", "%s: want a function from v%d, got one from v%d", typ, len(u.chains[typ])+1, from)
	}
	u.chains[typ] = append(u.chains[typ], fn)
	return nil
}

// Latest returns the newest version of typ the chain reaches: 1 when typ
// has no step.
func (u *Upcasters) Latest(typ string) int {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return len(u.chains[typ]) + 1
}

// Upcast brings data, an event of type typ with metadata md, to typ's
// newest version, and returns it with a copy of md whose
// message.KeySchemaVersion (and message.KeyDataSchema) say so. An event
// at the newest version, newer than it, or of a type with no chain is
// returned as it is, without a copy. Errors: Permanent for data that is
// not a JSON object, a bad version or a step's error.
func (u *Upcasters) Upcast(typ string, md message.Metadata, data []byte) ([]byte, message.Metadata, error) {
	out, omd, _, err := u.upcast(typ, md, data)
	return out, omd, err
}

// upcast is Upcast, also reporting whether it changed anything.
func (u *Upcasters) upcast(typ string, md message.Metadata, data []byte) ([]byte, message.Metadata, bool, error) {
	const op = "schema: upcast"
	u.mu.RLock()
	chain := u.chains[typ]
	u.mu.RUnlock()
	if len(chain) == 0 {
		return data, md, false, nil
	}
	v, err := VersionOf(md)
	if err != nil {
		return nil, nil, false, message.Wrap(message.Permanent, op, err)
	}
	latest := len(chain) + 1
	if v >= latest {
		return data, md, false, nil
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var ev map[string]any
	if err := d.Decode(&ev); err != nil || ev == nil {
		return nil, nil, false, message.Errorf(message.Permanent, op, "%s v%d: payload is not a JSON object", typ, v)
	}
	for i := v; i < latest; i++ {
		if err := chain[i-1](ev); err != nil {
			return nil, nil, false, message.Errorf(message.Permanent, op, "%s v%d -> v%d: %w", typ, i, i+1, err)
		}
	}
	out, err := json.Marshal(ev)
	if err != nil {
		return nil, nil, false, message.Errorf(message.Permanent, op, "%s v%d: %w", typ, latest, err)
	}
	return out, stamped(md, typ, latest), true, nil
}

// Stamp returns md marked with typ's newest version when typ has a chain
// and md names no version (eventstore.VersionStamper: an event encoded
// from its Go type is the newest version).
func (u *Upcasters) Stamp(typ string, md message.Metadata) message.Metadata {
	latest := u.Latest(typ)
	if latest == 1 || md[message.KeySchemaVersion] != "" {
		return md
	}
	return stamped(md, typ, latest)
}

func stamped(md message.Metadata, typ string, v int) message.Metadata {
	out := make(message.Metadata, len(md)+2)
	for k, x := range md {
		out[k] = x
	}
	out[message.KeySchemaVersion] = strconv.Itoa(v)
	out[message.KeyDataSchema] = (&Schema{Type: typ, Version: v}).DataSchema()
	return out
}
