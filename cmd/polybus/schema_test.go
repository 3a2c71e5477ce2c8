package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture is the schema repository under testdata: OrderPlaced v1 → v2
// adds an optional currency with a default (BACKWARD, compatible);
// OrderShipped v1 → v2 renames carrier to shipper (FULL, breaking), and
// the tracking contract still reads carrier.
const fixture = "testdata/schemas"

func TestSchemaCheck(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	abs, err := filepath.Abs(fixture)
	if err != nil {
		t.Fatal(err)
	}
	r := c.expect(exitFailure, []string{"polybus: schema check: 5 problem(s) in " + abs + " (2 types, 4 versions, 2 contracts)"}, "schema", "check", abs)
	shipped := filepath.Join(abs, "OrderShipped", "v2.json") + ": OrderShipped v1 -> v2 "
	want := []string{
		shipped + `BACKWARD (breaks readers): #/properties/shipper: required-added: the new schema requires "shipper", the old does not`,
		shipped + `BACKWARD (breaks readers): #/properties/carrier: property-removed-from-closed-model: "carrier" is not in the new schema, whose content model is closed (additionalProperties: false)`,
		shipped + `FORWARD (breaks writers): #/properties/carrier: required-removed: the old schema requires "carrier", the new does not`,
		shipped + `FORWARD (breaks writers): #/properties/shipper: property-added-to-closed-model: "shipper" is not in the old schema, whose content model is closed (additionalProperties: false)`,
		filepath.Join(abs, "contracts", "tracking.yaml") + `: OrderShipped v2 contract of tracking: #/properties/carrier: contract-field-missing: consumer tracking reads carrier, which the schema does not declare`,
	}
	got := lines(r.stdout)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdout:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The compatible change alone passes: a copy holding OrderPlaced and
	// the billing contract. The default directory is ./schemas.
	dir := filepath.Join(c.dir, "schemas")
	copyFile(t, filepath.Join(abs, "OrderPlaced", "v1.json"), filepath.Join(dir, "OrderPlaced", "v1.json"))
	copyFile(t, filepath.Join(abs, "OrderPlaced", "v2.json"), filepath.Join(dir, "OrderPlaced", "v2.json"))
	copyFile(t, filepath.Join(abs, "OrderPlaced", "compatibility"), filepath.Join(dir, "OrderPlaced", "compatibility"))
	copyFile(t, filepath.Join(abs, "contracts", "billing.yaml"), filepath.Join(dir, "contracts", "billing.yaml"))
	if out := c.ok("schema", "check").stdout; out != "ok: 1 types, 2 versions, 1 contracts\n" {
		t.Errorf("check of the compatible change: %q", out)
	}
	// Under FORWARD the same change breaks old readers (their model is
	// closed): exit 1 naming the path.
	writeFile(t, filepath.Join(dir, "OrderPlaced", "compatibility"), "forward\n")
	r = c.expect(exitFailure, []string{"1 problem(s)"}, "schema", "check")
	if !strings.Contains(r.stdout, "OrderPlaced v1 -> v2 FORWARD (breaks writers): #/properties/currency: property-added-to-closed-model") {
		t.Errorf("check under FORWARD:\n%s", r)
	}

	// Bad input is a usage error (2).
	writeFile(t, filepath.Join(dir, "OrderPlaced", "compatibility"), "SIDEWAYS\n")
	c.expect(exitUsage, []string{`unknown compatibility mode "SIDEWAYS`}, "schema", "check")
	writeFile(t, filepath.Join(dir, "OrderPlaced", "compatibility"), "BACKWARD\n")
	writeFile(t, filepath.Join(dir, "OrderPlaced", "v3.json"), `{"type": "object",`)
	c.expect(exitUsage, []string{"OrderPlaced v3: not JSON"}, "schema", "check", dir)
	writeFile(t, filepath.Join(dir, "OrderPlaced", "v3.json"), `{"type": "objekt"}`)
	c.expect(exitUsage, []string{"v3.json", "OrderPlaced v3"}, "schema", "check", dir)
	os.Remove(filepath.Join(dir, "OrderPlaced", "v3.json"))
	writeFile(t, filepath.Join(dir, "OrderPlaced", "v4.json"), `{}`)
	c.expect(exitUsage, []string{"v3 is missing"}, "schema", "check", dir)
	os.Remove(filepath.Join(dir, "OrderPlaced", "v4.json"))
	writeFile(t, filepath.Join(dir, "contracts", "x.yaml"), "consumer: x\ntype: OrderPlaced\nfields: [{path: id, type: strin}]\n")
	c.expect(exitUsage, []string{`unknown type "strin"`}, "schema", "check", dir)
	c.expect(exitUsage, []string{"no schema directory"}, "schema", "check", filepath.Join(c.dir, "nope"))
	c.expect(exitUsage, nil, "schema", "check", "a", "b")
}

func TestSchemaDiff(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	abs, _ := filepath.Abs(fixture)
	v1, v2 := filepath.Join(abs, "OrderPlaced", "v1.json"), filepath.Join(abs, "OrderPlaced", "v2.json")
	want := v1 + " -> " + v2 + `
BACKWARD  compatible
FORWARD   incompatible
  #/properties/currency: property-added-to-closed-model: "currency" is not in the old schema, whose content model is closed (additionalProperties: false)
FULL      incompatible
`
	if out := c.ok("schema", "diff", v1, v2).stdout; out != want {
		t.Errorf("diff:\n%s\nwant:\n%s", out, want)
	}
	c.ok("schema", "diff", "--mode", "BACKWARD_TRANSITIVE", v1, v2)
	c.expect(exitFailure, []string{"schema diff: incompatible under FULL: property-added-to-closed-model"}, "schema", "diff", "--mode", "full", v1, v2)
	s1, s2 := filepath.Join(abs, "OrderShipped", "v1.json"), filepath.Join(abs, "OrderShipped", "v2.json")
	r := c.expect(exitFailure, []string{"incompatible under BACKWARD: required-added"}, "schema", "diff", "--mode", "backward", s1, s2)
	if !strings.Contains(r.stdout, "BACKWARD  incompatible\n  #/properties/shipper: required-added") || !strings.Contains(r.stdout, "  #/properties/carrier: property-removed-from-closed-model") {
		t.Errorf("diff of the rename:\n%s", r)
	}
	c.expect(exitUsage, []string{`unknown compatibility mode "sometimes"`}, "schema", "diff", "--mode", "sometimes", v1, v2)
	c.expect(exitUsage, []string{"no such file"}, "schema", "diff", v1, filepath.Join(c.dir, "missing.json"))
	c.expect(exitUsage, nil, "schema", "diff", v1)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
