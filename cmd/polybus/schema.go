package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/polybus/polybus/schema"
)

func (a *app) schemaCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Check event schemas' compatibility and consumer contracts; explain a change",
		Long: `Work on a schema registry directory (package schema):

  DIR/TYPE/v1.json, v2.json, ...   the versions of an event type's JSON Schema (draft 2020-12)
  DIR/TYPE/compatibility           the type's mode: NONE, BACKWARD (the default), FORWARD,
                                   FULL, BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE, FULL_TRANSITIVE
  DIR/contracts/*.yaml             consumer contracts: the fields a consumer reads

The modes mean what they mean in Confluent Schema Registry: BACKWARD, a
consumer using the new schema reads data produced with the previous one;
FORWARD, a consumer using the previous schema reads data produced with the
new one; FULL, both; _TRANSITIVE, against every earlier version.`,
	}
	cmd.AddCommand(a.schemaCheck(), a.schemaDiff())
	return cmd
}

func (a *app) schemaCheck() *cobra.Command {
	return &cobra.Command{
		Use:   "check [DIR]",
		Short: "Check every version against the earlier ones, and every contract against the newest (exit 1 on a problem)",
		Long: `Check a schema directory (default ./schemas) as CI should: every version of
every type against the earlier ones under the type's mode, and every consumer
contract against its type's newest schema. Each problem is one line on
stdout:

  FILE: TYPE vOLD -> vNEW MODE-HALF (breaks readers|writers): PATH: RULE: DETAIL
  FILE: TYPE vN contract CONTRACT: PATH: RULE: DETAIL

Exit status 1 when there is a problem, 2 when a file does not parse.`,
		Example: `  polybus schema check
  polybus schema check ./schemas`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			dir := "schemas"
			if len(args) == 1 {
				dir = args[0]
			}
			reg, err := schema.LoadDir(dir)
			if err != nil {
				return usageError{err}
			}
			problems := reg.Check()
			for _, p := range problems {
				file := filepath.Join(dir, p.Subject, "v"+strconv.Itoa(p.New)+".json")
				if p.Contract != "" {
					file = filepath.Join(dir, filepath.FromSlash(p.Contract))
				}
				fmt.Fprintf(a.stdout, "%s: %s\n", file, p)
			}
			types, versions := 0, 0
			for _, t := range reg.Types() {
				types++
				versions += len(reg.Versions(t))
			}
			if len(problems) > 0 {
				return exitError{code: exitFailure, msg: fmt.Sprintf("schema check: %d problem(s) in %s (%d types, %d versions, %d contracts)",
					len(problems), dir, types, versions, len(reg.Contracts()))}
			}
			fmt.Fprintf(a.stdout, "ok: %d types, %d versions, %d contracts\n", types, versions, len(reg.Contracts()))
			return nil
		}),
	}
}

func (a *app) schemaDiff() *cobra.Command {
	var mode, typ string
	cmd := &cobra.Command{
		Use:   "diff OLD.json NEW.json",
		Short: "Explain the change from one schema to another, with a verdict per mode",
		Long: `Compare two JSON Schema files, OLD then NEW, and print a verdict for
BACKWARD, FORWARD and FULL (the transitive modes agree with them for two
versions), with the problems under each. With --mode, exit 1 when the change
is incompatible under that mode.`,
		Example: `  polybus schema diff schemas/OrderPlaced/v1.json schemas/OrderPlaced/v2.json
  polybus schema diff --mode FULL old.json new.json`,
		Args: cobra.ExactArgs(2),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			var gate schema.Mode
			if mode != "" {
				m, err := schema.ParseMode(mode)
				if err != nil {
					return usageError{err}
				}
				gate = m
			}
			if typ == "" {
				typ = filepath.Base(filepath.Dir(args[1]))
			}
			var ss [2]*schema.Schema
			for i, path := range args {
				raw, err := os.ReadFile(path)
				if err != nil {
					return usagef("%v", err)
				}
				s, err := schema.Compile(typ, i+1, raw)
				if err != nil {
					return usageError{fmt.Errorf("%s: %w", path, err)}
				}
				ss[i] = s
			}
			back, fwd := schema.Compare(ss[0], ss[1])
			w := a.stdout
			fmt.Fprintf(w, "%s -> %s\n", args[0], args[1])
			verdict := func(name string, ps []schema.Problem) {
				fmt.Fprintf(w, "%-9s %s\n", name, compatibility(len(ps) == 0))
				for _, p := range ps {
					fmt.Fprintf(w, "  %s: %s: %s\n", p.Path, p.Rule, p.Detail)
				}
			}
			verdict("BACKWARD", back)
			verdict("FORWARD", fwd)
			fmt.Fprintf(w, "%-9s %s\n", "FULL", compatibility(len(back)+len(fwd) == 0))
			var failed []schema.Problem
			if gate != "" {
				failed = schema.Check(gate, ss[0], ss[1])
			}
			if len(failed) > 0 {
				return exitError{code: exitFailure, msg: fmt.Sprintf("schema diff: incompatible under %s: %s", gate, failed[0].Rule)}
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&mode, "mode", "", "exit 1 when the change is incompatible under this mode ("+modeNames()+")")
	cmd.Flags().StringVar(&typ, "type", "", "the event type's name in the output (default NEW's directory name)")
	return cmd
}

func compatibility(ok bool) string {
	if ok {
		return "compatible"
	}
	return "incompatible"
}

func modeNames() string {
	names := make([]string, len(schema.Modes))
	for i, m := range schema.Modes {
		names[i] = string(m)
	}
	return strings.Join(names, ", ")
}
