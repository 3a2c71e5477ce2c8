// Package urlparam reads an adapter's URL query parameters strictly: each
// parameter is taken once by name, and whatever no one took is an error
// (message.ErrInvalidArgument) that names it and lists the known ones.
//
// Adapters use it so that a misspelt option is a clear error rather than
// silently ignored.
package urlparam

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/polybus/polybus/message"
)

// Params is the query of one URL being read.
type Params struct {
	op    string
	q     url.Values
	known []string
	err   error
}

// New starts reading u's query; op names the adapter in errors, such as
// "nats: open".
func New(op string, u *url.URL) *Params {
	return &Params{op: op, q: u.Query()}
}

func (p *Params) take(name string) (string, bool) {
	p.known = append(p.known, name)
	vs, ok := p.q[name]
	if !ok {
		return "", false
	}
	delete(p.q, name)
	if len(vs) > 1 && p.err == nil {
		p.err = message.Errorf(message.InvalidArgument, p.op, "query parameter %q given %d times", name, len(vs))
	}
	return vs[len(vs)-1], true
}

func (p *Params) fail(name, v, want string) {
	if p.err == nil {
		p.err = message.Errorf(message.InvalidArgument, p.op, "query parameter %s=%q: want %s", name, v, want)
	}
}

// String returns parameter name, or def when it is absent.
func (p *Params) String(name, def string) string {
	if v, ok := p.take(name); ok {
		return v
	}
	return def
}

// Int returns parameter name as an int, or def.
func (p *Params) Int(name string, def int) int {
	v, ok := p.take(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.fail(name, v, "an integer")
		return def
	}
	return n
}

// Bool returns parameter name as a bool (true/false/1/0), or def.
func (p *Params) Bool(name string, def bool) bool {
	v, ok := p.take(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, v, "true or false")
		return def
	}
	return b
}

// Duration returns parameter name as a time.Duration ("1500ms", "2m"), or
// def.
func (p *Params) Duration(name string, def time.Duration) time.Duration {
	v, ok := p.take(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		p.fail(name, v, "a non-negative duration such as 500ms or 2m")
		return def
	}
	return d
}

// OneOf returns parameter name, which must be one of allowed, or def.
func (p *Params) OneOf(name, def string, allowed ...string) string {
	v, ok := p.take(name)
	if !ok {
		return def
	}
	if !slices.Contains(allowed, v) {
		p.fail(name, v, "one of "+strings.Join(allowed, ", "))
		return def
	}
	return v
}

// Err returns the first bad value, or an error naming the parameters that
// nobody read, or nil. Call it after reading every known parameter.
func (p *Params) Err() error {
	if p.err != nil {
		return p.err
	}
	if len(p.q) == 0 {
		return nil
	}
	unknown := make([]string, 0, len(p.q))
	for k := range p.q {
		unknown = append(unknown, k)
	}
	slices.Sort(unknown)
	known := slices.Clone(p.known)
	slices.Sort(known)
	list := strings.Join(known, ", ")
	if list == "" {
		list = "none"
	}
	return message.Errorf(message.InvalidArgument, p.op,
		"unknown query parameter %s (known: %s)", strings.Join(unknown, ", "), list)
}
