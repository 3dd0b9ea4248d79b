package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Output formats every command that prints a resource takes (--output, -o).
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

var outputFormats = []string{formatTable, formatJSON, formatYAML}

// outputFlag is a command's --output: table for people, json and yaml for
// scripts. The json and yaml forms carry the API's field names, so the two say
// the same thing.
type outputFlag struct{ format string }

// addOutputFlag adds --output/-o with the command's default format. "text" is
// taken for table: it was the name before the formats were shared.
func (o *outputFlag) add(f *pflag.FlagSet, def string) {
	f.StringVarP(&o.format, "output", "o", def, "table, json or yaml")
}

// check refuses a format this command does not print, as a usage error.
func (o *outputFlag) check() error {
	if o.format == "text" {
		o.format = formatTable
	}
	if !slices.Contains(outputFormats, o.format) {
		return usage(fmt.Errorf("--output %q: want table, json or yaml", o.format), "--output json")
	}
	return nil
}

// print writes v in the chosen format; table writes the people's form (nil: the
// value's fields, one per line).
func (o *outputFlag) print(w io.Writer, v any, table func(io.Writer) error) error {
	switch o.format {
	case formatJSON:
		return printJSON(w, v)
	case formatYAML:
		return printYAML(w, v)
	}
	if table != nil {
		return table(w)
	}
	return printFields(w, v)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printYAML writes v as YAML with its JSON field names and order: the value goes
// through its JSON form, which YAML reads as a document (keeping key order), then
// is written in block style.
func printYAML(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// blockStyle clears the flow and quoting styles JSON parses with; the encoder
// still quotes a string that would read as another type.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// printFields is the table form of one resource: its JSON fields as
// "name: value" lines, nested values in their compact JSON.
func printFields(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		_, err := fmt.Fprintln(w, strings.TrimSpace(string(data)))
		return err
	}
	m := doc.Content[0]
	width := 0
	for i := 0; i < len(m.Content); i += 2 {
		width = max(width, len(m.Content[i].Value))
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		val := m.Content[i+1]
		s := val.Value
		if val.Kind != yaml.ScalarNode {
			var raw map[string]json.RawMessage
			_ = json.Unmarshal(data, &raw)
			s = string(compactJSON(raw[m.Content[i].Value]))
		}
		if _, err := fmt.Fprintf(w, "%-*s  %s\n", width+1, m.Content[i].Value+":", s); err != nil {
			return err
		}
	}
	return nil
}

func compactJSON(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}
