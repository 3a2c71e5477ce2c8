package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/polybus/polybus/message"
)

// jsonMessage is the JSON line that sub --json and dlq ls/show --json
// print for a message. Payload is the payload as a string when it is valid
// UTF-8, else its standard base64 encoding with PayloadBase64 set.
type jsonMessage struct {
	Topic         string            `json:"topic"`
	Group         string            `json:"group,omitempty"`
	ID            string            `json:"id"`
	Key           string            `json:"key"`
	Attempt       int               `json:"attempt"`
	Time          string            `json:"time,omitempty"`
	Metadata      map[string]string `json:"metadata"`
	Payload       string            `json:"payload"`
	PayloadBase64 bool              `json:"payload_base64,omitempty"`
	// TraceID is set by sub --trace (a pointer, so that "" prints).
	TraceID *string `json:"trace_id,omitempty"`
}

func toJSON(m *message.Message) jsonMessage {
	d, _ := m.Delivery()
	j := jsonMessage{
		Topic: d.Topic, Group: d.Group, ID: m.ID, Key: m.Key, Attempt: m.Attempt(),
		Metadata: map[string]string{},
	}
	if !m.Time.IsZero() {
		j.Time = m.Time.UTC().Format(time.RFC3339Nano)
	}
	for k, v := range m.Metadata {
		j.Metadata[k] = v
	}
	if utf8.Valid(m.Payload) {
		j.Payload = string(m.Payload)
	} else {
		j.Payload = base64.StdEncoding.EncodeToString(m.Payload)
		j.PayloadBase64 = true
	}
	return j
}

// writeJSON prints m as a JSON line, with its trace ID when trace is set.
func writeJSON(w io.Writer, m *message.Message, trace bool) error {
	j := toJSON(m)
	if trace {
		id := message.TraceID(m.Metadata)
		j.TraceID = &id
	}
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// writeLine prints m on one line for people:
//
//	ID key=KEY attempt=N [trace=TRACE] [NAME=VALUE ...] | PAYLOAD
//
// trace= (the W3C trace ID of its traceparent) is printed when trace is set.
// Metadata is sorted by name; values with spaces or special characters are
// quoted. The payload is printed as it is when it is printable text on one
// line, Go-quoted when it holds newlines or control characters, and as
// "base64:..." when it is not UTF-8.
func writeLine(w io.Writer, m *message.Message, trace bool) error {
	var b strings.Builder
	b.WriteString(m.ID)
	b.WriteString(" key=")
	b.WriteString(quoteIfNeeded(m.Key))
	b.WriteString(" attempt=")
	b.WriteString(strconv.Itoa(m.Attempt()))
	if trace {
		b.WriteString(" trace=")
		b.WriteString(quoteIfNeeded(message.TraceID(m.Metadata)))
	}
	for _, k := range sortedKeys(m.Metadata) {
		b.WriteString(" ")
		b.WriteString(quoteIfNeeded(k))
		b.WriteString("=")
		b.WriteString(quoteIfNeeded(m.Metadata[k]))
	}
	b.WriteString(" | ")
	b.WriteString(payloadText(m.Payload))
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// payloadText renders a payload on one line.
func payloadText(p []byte) string {
	if !utf8.Valid(p) {
		return "base64:" + base64.StdEncoding.EncodeToString(p)
	}
	s := string(p)
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			return strconv.Quote(s)
		}
	}
	return s
}

// quoteIfNeeded quotes s when it is empty or holds spaces, quotes, '=' or
// characters that are not printable.
func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == '"' || r == '=' || r == '|' {
			return strconv.Quote(s)
		}
	}
	return s
}

func sortedKeys(md message.Metadata) []string {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
