package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Keys lists every key a config of type t accepts, as dotted paths matched
// the way Decode matches them (yaml tags, inline structs): a map's entries
// and a list's items are "*" (sites.*.caps.cores, demand.htcondor.vm_types.*.name).
// Only the keys of structs are listed, sorted.
func Keys(t reflect.Type) []string {
	var out []string
	var walk func(prefix string, t reflect.Type, depth int)
	walk = func(prefix string, t reflect.Type, depth int) {
		if depth > 16 {
			return // a recursive type: config structs are not
		}
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t == durationType {
			return
		}
		switch t.Kind() {
		case reflect.Struct:
			for name, idx := range structFields(t) {
				p := joinKey(prefix, name)
				out = append(out, p)
				walk(p, t.FieldByIndex(idx).Type, depth+1)
			}
		case reflect.Map, reflect.Slice, reflect.Array:
			walk(joinKey(prefix, "*"), t.Elem(), depth+1)
		}
	}
	walk("", t, 0)
	slices.Sort(out)
	return out
}

// commentKey finds the key of a commented-out setting: "# key:" or
// "# - key:" (a list item).
var commentKey = regexp.MustCompile(`(?m)^\s*#\s*(?:-\s*)?([a-z0-9_]+):`)

// Mentions is what a YAML file says about keys: the key paths it sets
// (map entries and list items as themselves) and the key names it shows in
// comments (commented-out settings such as "# cloud: arbutus").
type Mentions struct {
	Paths     map[string]bool
	Commented map[string]bool
}

// Mentioned reads what the YAML text data says about keys.
func Mentioned(name string, data []byte) (Mentions, error) {
	m := Mentions{Paths: map[string]bool{}, Commented: map[string]bool{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return m, fmt.Errorf("%s: %w", name, err)
	}
	var walk func(prefix string, n *yaml.Node, depth int)
	walk = func(prefix string, n *yaml.Node, depth int) {
		if depth > 64 || n == nil {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(prefix, c, depth+1)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := joinKey(prefix, n.Content[i].Value)
				m.Paths[p] = true
				walk(p, n.Content[i+1], depth+1)
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(joinKey(prefix, "*"), c, depth+1)
			}
		}
	}
	walk("", &doc, 0)
	for _, sm := range commentKey.FindAllSubmatch(data, -1) {
		m.Commented[string(sm[1])] = true
	}
	return m, nil
}

// Has reports whether the file sets a key matching pattern (a Keys path,
// "*" matching any one segment) or shows the pattern's last key in a
// comment.
func (m Mentions) Has(pattern string) bool {
	segs := strings.Split(pattern, ".")
	if m.Commented[segs[len(segs)-1]] {
		return true
	}
	for p := range m.Paths {
		ps := strings.Split(p, ".")
		if len(ps) != len(segs) {
			continue
		}
		match := true
		for i := range segs {
			if segs[i] != "*" && segs[i] != ps[i] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}
