// Package config decodes Canopy's YAML configuration files strictly: an
// unknown key or a value of the wrong type is an error that names the file,
// the line and the key, so a typo in a site admin's config never passes
// silently.
//
// Struct fields are matched by their `yaml` tag (or lowercased field name).
// time.Duration fields take Go duration strings ("90s", "10m").
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is a problem at one place in a config file.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: key %q: %s", e.File, e.Line, e.Key, e.Msg)
}

// MaxFileSize bounds a config file. Canopy's configs are a few kilobytes;
// a bigger file is a mistake (or an attack) that would otherwise be read
// and parsed whole, at many times its size in memory.
const MaxFileSize = 1 << 20

// maxValues bounds how many values one file may decode into, counting each
// use of a YAML alias afresh: aliases of aliases would otherwise expand a
// small file into billions of values. Real configs hold a few thousand.
const maxValues = 1 << 18

// Load reads the YAML file at path into out (a pointer to a struct). The
// file must be a regular file of at most MaxFileSize bytes.
func Load(path string, out any) error {
	// Stat before opening: opening a FIFO blocks until someone writes.
	if err := checkFile(path, os.Stat); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	if err := checkFile(path, func(string) (os.FileInfo, error) { return f.Stat() }); err != nil {
		return err
	}
	// The file may grow between Stat and the read: read one byte more
	// than the limit to notice.
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return fmt.Errorf("read config %s: %w", path, err)
	}
	return Decode(path, b, out)
}

// checkFile refuses what stat says is not a regular file of at most
// MaxFileSize bytes.
func checkFile(path string, stat func(string) (os.FileInfo, error)) error {
	fi, err := stat(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("read config %s: not a regular file (mode %s)", path, fi.Mode())
	}
	if fi.Size() > MaxFileSize {
		return fmt.Errorf("read config %s: file is %d bytes, limit %d", path, fi.Size(), MaxFileSize)
	}
	return nil
}

// Decode decodes YAML data, read from a file named name, into out. Data
// over MaxFileSize bytes is refused.
func Decode(name string, data []byte, out any) error {
	if len(data) > MaxFileSize {
		return fmt.Errorf("%s: config is %d bytes, limit %d", name, len(data), MaxFileSize)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: all defaults
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("config.Decode needs a non-nil pointer, got %T", out)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	d := &decoder{file: name, budget: maxValues}
	return d.decodeNode("", root, v.Elem())
}

var durationType = reflect.TypeOf(time.Duration(0))

// decoder walks one file's YAML nodes into Go values.
type decoder struct {
	file string
	// budget is how many more values may be decoded.
	budget int
}

func (d *decoder) decodeNode(key string, n *yaml.Node, v reflect.Value) error {
	file := d.file
	fail := func(format string, args ...any) error {
		return &Error{File: file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	if d.budget--; d.budget < 0 {
		return fail("the file expands to more than %d values (each use of a YAML alias counts again)", maxValues)
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // leave the default
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decodeNode(key, n, v.Elem())
	}
	if v.Type() == durationType {
		if n.Kind != yaml.ScalarNode {
			return fail("want a duration such as \"30s\", got %s", kindName(n))
		}
		d, err := time.ParseDuration(n.Value)
		if err != nil {
			return fail("want a duration such as \"30s\" or \"10m\", got %q", n.Value)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return fail("want a mapping, got %s", kindName(n))
		}
		fields := structFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			name := kn.Value
			full := joinKey(key, name)
			if seen[name] {
				return &Error{File: file, Line: kn.Line, Key: full, Msg: "given twice"}
			}
			seen[name] = true
			idx, ok := fields[name]
			if !ok {
				return &Error{File: file, Line: kn.Line, Key: full, Msg: fmt.Sprintf("unknown key (known: %s)", knownKeys(fields))}
			}
			if err := d.decodeNode(full, vn, v.FieldByIndex(idx)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return fail("want a mapping, got %s", kindName(n))
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			kv := reflect.New(v.Type().Key()).Elem()
			if err := d.decodeNode(joinKey(key, kn.Value), kn, kv); err != nil {
				return err
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			if err := d.decodeNode(joinKey(key, kn.Value), vn, ev); err != nil {
				return err
			}
			v.SetMapIndex(kv, ev)
		}
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fail("want a list, got %s", kindName(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, en := range n.Content {
			if err := d.decodeNode(fmt.Sprintf("%s[%d]", key, i), en, s.Index(i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fail("want %s, got %s", typeName(v.Type()), kindName(n))
	}
	tmp := reflect.New(v.Type())
	if err := n.Decode(tmp.Interface()); err != nil {
		return fail("want %s, got %q", typeName(v.Type()), n.Value)
	}
	if k := v.Kind(); k == reflect.Float32 || k == reflect.Float64 {
		// YAML spells NaN and infinities .nan and .inf; no setting means
		// either, and NaN poisons every comparison it reaches.
		if f := tmp.Elem().Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			return fail("want a finite number, got %q", n.Value)
		}
	}
	v.Set(tmp.Elem())
	return nil
}

// structFields maps keys to field index paths; fields tagged ",inline"
// contribute their own fields.
func structFields(t reflect.Type) map[string][]int {
	m := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := strings.ToLower(f.Name)
		if tag, ok := f.Tag.Lookup("yaml"); ok {
			parts := strings.Split(tag, ",")
			if parts[0] == "-" {
				continue
			}
			if slices.Contains(parts[1:], "inline") && f.Type.Kind() == reflect.Struct {
				for k, idx := range structFields(f.Type) {
					m[k] = append([]int{i}, idx...)
				}
				continue
			}
			if parts[0] != "" {
				name = parts[0]
			}
		}
		m[name] = []int{i}
	}
	return m
}

func knownKeys(fields map[string][]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

func joinKey(parent, k string) string {
	if parent == "" {
		return k
	}
	return parent + "." + k
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}
