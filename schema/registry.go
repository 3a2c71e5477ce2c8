package schema

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/polybus/polybus/message"
)

// Registry holds event types' schemas by version, each type's
// compatibility mode and the consumer contracts. The zero value is empty
// and ready; a Registry is safe for concurrent use.
type Registry struct {
	mu        sync.RWMutex
	subjects  map[string]*subject
	contracts []*Contract
}

type subject struct {
	mode     Mode
	versions []*Schema // versions[i].Version == i+1
}

// ContractsDir is the directory, under a registry directory, that holds
// the consumer contracts. No event type may have its name.
const ContractsDir = "contracts"

// ModeFile is the file, in an event type's directory, that holds its
// compatibility mode.
const ModeFile = "compatibility"

// LoadDir reads a registry directory:
//
//	DIR/TYPE/v1.json, v2.json, ...  the versions of TYPE's schema, from 1 with no gap
//	DIR/TYPE/compatibility          TYPE's mode (BACKWARD when the file is absent)
//	DIR/contracts/**/*.yaml         consumer contracts (see ParseContract)
//
// Other files are ignored. It checks no compatibility: [Registry.Check]
// does. Errors: InvalidArgument for a schema, mode or contract that does
// not parse, a version file name other than vN.json, or a gap in the
// versions; NotFound for a missing directory.
func LoadDir(dir string) (*Registry, error) {
	const op = "schema: load"
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, message.Errorf(message.NotFound, op, "no schema directory %s", dir)
		}
		return nil, message.Wrap(message.InvalidArgument, op, err)
	}
	r := &Registry{}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if e.Name() == ContractsDir {
			if err := r.loadContracts(dir, filepath.Join(dir, e.Name())); err != nil {
				return nil, err
			}
			continue
		}
		if err := r.loadType(filepath.Join(dir, e.Name()), e.Name()); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *Registry) loadType(dir, typ string) error {
	const op = "schema: load"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return message.Wrap(message.InvalidArgument, op, err)
	}
	byVersion := map[int][]byte{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".json") {
			continue
		}
		v, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "v"), ".json"))
		if !strings.HasPrefix(name, "v") || err != nil || v < 1 {
			return message.Errorf(message.InvalidArgument, op, "%s: want a version file named vN.json (N = 1, 2, ...)", filepath.Join(dir, name))
		}
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return message.Wrap(message.InvalidArgument, op, err)
		}
		byVersion[v] = raw
	}
	for v := 1; v <= len(byVersion); v++ {
		raw, ok := byVersion[v]
		if !ok {
			return message.Errorf(message.InvalidArgument, op, "%s: versions must run from v1 with no gap; v%d is missing", dir, v)
		}
		s, err := Compile(typ, v, raw)
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, "v"+strconv.Itoa(v)+".json"), err)
		}
		if err := r.Add(s); err != nil {
			return err
		}
	}
	if raw, err := os.ReadFile(filepath.Join(dir, ModeFile)); err == nil {
		m, err := ParseMode(string(raw))
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, ModeFile), err)
		}
		r.SetMode(typ, m)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return message.Wrap(message.InvalidArgument, op, err)
	}
	return nil
}

func (r *Registry) loadContracts(root, dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return message.Wrap(message.InvalidArgument, "schema: load", err)
		}
		if d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return message.Wrap(message.InvalidArgument, "schema: load", err)
		}
		rel, _ := filepath.Rel(root, path)
		c, err := ParseContract(filepath.ToSlash(rel), raw)
		if err != nil {
			return err
		}
		r.AddContract(c)
		return nil
	})
}

// Add adds s as the next version of its type without checking
// compatibility. Errors: InvalidArgument when s.Version is not the
// type's next version.
func (r *Registry) Add(s *Schema) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	sub := r.subject(s.Type)
	if s.Version != len(sub.versions)+1 {
		return message.Errorf(message.InvalidArgument, "schema: add", "%s: the next version of %s is v%d", s, s.Type, len(sub.versions)+1)
	}
	sub.versions = append(sub.versions, s)
	return nil
}

// subject returns typ's subject, creating it; r.mu must be held.
func (r *Registry) subject(typ string) *subject {
	if r.subjects == nil {
		r.subjects = map[string]*subject{}
	}
	sub, ok := r.subjects[typ]
	if !ok {
		sub = &subject{mode: Backward}
		r.subjects[typ] = sub
	}
	return sub
}

// IncompatibleError is a Register refused: the problems of the new
// version under its type's mode. Its code is InvalidArgument.
type IncompatibleError struct {
	Mode     Mode
	Problems []Problem
}

func (e *IncompatibleError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("polybus: schema: register: invalid argument: incompatible under %s: %s", e.Mode, strings.Join(lines, "; "))
}

// Unwrap returns the coded error (InvalidArgument).
func (e *IncompatibleError) Unwrap() error {
	return &message.Error{Code: message.InvalidArgument, Op: "schema: register", Msg: "incompatible under " + string(e.Mode)}
}

// Register compiles raw as the next version of typ and adds it when it
// is compatible with the earlier versions under typ's mode. Errors:
// InvalidArgument for a schema that does not compile, and an
// *IncompatibleError listing the problems.
func (r *Registry) Register(typ string, raw []byte) (*Schema, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sub := r.subject(typ)
	s, err := Compile(typ, len(sub.versions)+1, raw)
	if err != nil {
		return nil, err
	}
	if ps := Check(sub.mode, append(slices.Clip(sub.versions), s)...); len(ps) > 0 {
		return nil, &IncompatibleError{Mode: sub.mode, Problems: ps}
	}
	sub.versions = append(sub.versions, s)
	return s, nil
}

// SetMode sets typ's compatibility mode (default Backward).
func (r *Registry) SetMode(typ string, m Mode) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subject(typ).mode = m
}

// Mode returns typ's compatibility mode.
func (r *Registry) Mode(typ string) Mode {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if sub, ok := r.subjects[typ]; ok {
		return sub.mode
	}
	return Backward
}

// Types returns the event types with at least one version, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for t, sub := range r.subjects {
		if len(sub.versions) > 0 {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// Versions returns typ's schemas, oldest first.
func (r *Registry) Versions(typ string) []*Schema {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if sub, ok := r.subjects[typ]; ok {
		return slices.Clone(sub.versions)
	}
	return nil
}

// Schema returns version v of typ.
func (r *Registry) Schema(typ string, v int) (*Schema, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	sub, ok := r.subjects[typ]
	if !ok || v < 1 || v > len(sub.versions) {
		return nil, false
	}
	return sub.versions[v-1], true
}

// Latest returns the newest version of typ.
func (r *Registry) Latest(typ string) (*Schema, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	sub, ok := r.subjects[typ]
	if !ok || len(sub.versions) == 0 {
		return nil, false
	}
	return sub.versions[len(sub.versions)-1], true
}

// AddContract adds a consumer contract.
func (r *Registry) AddContract(c *Contract) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.contracts = append(r.contracts, c)
}

// Contracts returns the consumer contracts.
func (r *Registry) Contracts() []*Contract {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.contracts)
}

// Check checks the whole registry, as CI should: every version of every
// type against the earlier ones under the type's mode (as if each had
// been registered in turn), and every contract against its type's
// newest schema. Problems come sorted by type, then version.
func (r *Registry) Check() []Problem {
	var out []Problem
	for _, typ := range r.Types() {
		vs := r.Versions(typ)
		mode := r.Mode(typ)
		for k := 2; k <= len(vs); k++ {
			out = append(out, Check(mode, vs[:k]...)...)
		}
	}
	for _, c := range r.Contracts() {
		s, ok := r.Latest(c.Type)
		if !ok {
			out = append(out, Problem{Subject: c.Type, Contract: c.File, Consumer: c.Consumer, Path: "#", Rule: "contract-type-unknown",
				Detail: fmt.Sprintf("consumer %s reads %s, which has no schema", c.Consumer, c.Type)})
			continue
		}
		out = append(out, c.Check(s)...)
	}
	return out
}

// lookup returns the schema that m's type and version name, for
// validation: the newest version when m's is newer than any known (a
// consumer on an older schema reads newer data, as FORWARD promises).
// ok is false for a message with no type or an unknown type.
func (r *Registry) lookup(md message.Metadata) (*Schema, bool, error) {
	typ := md[message.KeyType]
	if typ == "" {
		return nil, false, nil
	}
	v, err := VersionOf(md)
	if err != nil {
		return nil, false, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	sub, ok := r.subjects[typ]
	if !ok || len(sub.versions) == 0 {
		return nil, false, nil
	}
	return sub.versions[min(v, len(sub.versions))-1], true, nil
}
