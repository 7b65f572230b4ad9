// Package userdata composes and splits the user-data documents that
// cloud-init reads: either one part (a "#cloud-config" document, a "#!"
// script, ...) or a multi-part MIME message holding several, the format
// `cloud-init devel make-mime` writes. A site agent composes a VM's
// user-data from the vmagent's own cloud-config and the parts a site admin
// adds; the vmagent splits it again to find its settings.
//
// Everything read is untrusted: sizes, part counts and nesting are bounded,
// and every malformed input is an error naming what was wrong.
package userdata

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"

	"gopkg.in/yaml.v3"
)

// Content types cloud-init knows by the first line of a part.
const (
	TypeCloudConfig = "text/cloud-config"
	TypeShellScript = "text/x-shellscript"
	TypeBoothook    = "text/cloud-boothook"
	TypeIncludeURL  = "text/x-include-url"
	TypePartHandler = "text/part-handler"
	TypeJinja2      = "text/jinja2"
)

// MaxSize bounds a user-data document, composed or read: Nova refuses
// user-data whose base64 form is over 65535 bytes, so the raw document can
// be at most 49149 bytes.
const MaxSize = 65535 / 4 * 3

// Limits on what Split accepts.
const (
	maxParts    = 64
	maxDepth    = 4
	maxGunzip   = 1 << 20 // a gzip-compressed document expands to at most this
	maxFilename = 255
)

// Part is one part of a user-data document.
type Part struct {
	// Type is the MIME type, e.g. TypeCloudConfig.
	Type string
	// Filename names the part in the MIME headers (optional).
	Filename string
	// Content is the part's body, decoded.
	Content []byte
}

// prefixes maps a part's first-line prefix to its type, longest first where
// one prefix starts another, as cloud-init matches them.
var prefixes = []struct{ prefix, typ string }{
	{"#cloud-config", TypeCloudConfig},
	{"#cloud-boothook", TypeBoothook},
	{"#include", TypeIncludeURL},
	{"#part-handler", TypePartHandler},
	{"## template: jinja", TypeJinja2},
	{"#!", TypeShellScript},
}

// TypeOf returns the content type cloud-init gives a part by its first
// line, or an error if cloud-init would not recognise it.
func TypeOf(content []byte) (string, error) {
	for _, p := range prefixes {
		if bytes.HasPrefix(content, []byte(p.prefix)) {
			return p.typ, nil
		}
	}
	first, _, _ := bytes.Cut(content, []byte("\n"))
	if len(first) > 40 {
		first = append(first[:40:40], "..."...)
	}
	return "", fmt.Errorf("part starts with %q, not one of #cloud-config, #!, #cloud-boothook, #include, #part-handler, ## template: jinja", first)
}

// Compose returns a user-data document holding parts in order: a lone part
// that its first line types as itself, anything else as a multipart/mixed
// MIME message. Every cloud-config
// part carries a Merge-Type header that appends lists and merges maps, so
// that an admin's write_files, packages or runcmd add to the vmagent's
// instead of replacing them. The output is deterministic (the boundary is
// derived from the content), so the same parts give the same bytes.
func Compose(parts []Part) ([]byte, error) {
	if len(parts) == 0 {
		return nil, errors.New("compose user-data: no parts")
	}
	if len(parts) > maxParts {
		return nil, fmt.Errorf("compose user-data: %d parts, limit %d", len(parts), maxParts)
	}
	for i, p := range parts {
		if err := checkPart(p); err != nil {
			return nil, fmt.Errorf("compose user-data: part %d (%s): %w", i+1, p.Filename, err)
		}
	}
	var out []byte
	if t, err := TypeOf(parts[0].Content); len(parts) == 1 && err == nil && t == parts[0].Type {
		out = parts[0].Content // cloud-init types it by its first line
	} else {
		out = composeMIME(parts)
	}
	if len(out) > MaxSize {
		return nil, fmt.Errorf("compose user-data: %d bytes, limit %d (Nova's 64 KiB after base64)", len(out), MaxSize)
	}
	return out, nil
}

func checkPart(p Part) error {
	mt, params, err := mime.ParseMediaType(p.Type)
	if err != nil || len(params) > 0 || !strings.HasPrefix(mt, "text/") {
		return fmt.Errorf("content type %q is not a plain text/... type", p.Type)
	}
	if len(p.Filename) > maxFilename || strings.ContainsAny(p.Filename, "\"\\\r\n/") {
		return fmt.Errorf("filename %q is not a plain file name", p.Filename)
	}
	if len(p.Content) == 0 {
		return errors.New("empty part")
	}
	if p.Type == TypeCloudConfig {
		return CheckCloudConfig(p.Content)
	}
	return nil
}

// CheckCloudConfig checks that a cloud-config part is what cloud-init
// needs at the least: "#cloud-config" first, then a YAML mapping. (The
// schema of each module is cloud-init's own business: `cloud-init schema`.)
func CheckCloudConfig(b []byte) error {
	if !bytes.HasPrefix(b, []byte("#cloud-config")) {
		return errors.New("cloud-config does not start with #cloud-config")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("cloud-config is not YAML: %w", err)
	}
	if doc.Kind == 0 {
		return nil // only comments: cloud-init takes it as empty
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return errors.New("cloud-config is not a YAML mapping")
	}
	return nil
}

// mergeType makes later cloud-config parts add to earlier ones.
const mergeType = "list(append)+dict(recurse_array)+str()"

func composeMIME(parts []Part) []byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p.Type + "\x00" + p.Filename + "\x00"))
		h.Write(p.Content)
	}
	sum := h.Sum(nil)
	boundary := "==canopy-" + hex.EncodeToString(sum[:12]) + "=="
	var b bytes.Buffer
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=%q\r\nMIME-Version: 1.0\r\n\r\n", boundary)
	for _, p := range parts {
		fmt.Fprintf(&b, "--%s\r\n", boundary)
		fmt.Fprintf(&b, "Content-Type: %s; charset=\"utf-8\"\r\nMIME-Version: 1.0\r\n", p.Type)
		if p.Type == TypeCloudConfig {
			fmt.Fprintf(&b, "Merge-Type: %s\r\n", mergeType)
		}
		if p.Filename != "" {
			fmt.Fprintf(&b, "Content-Disposition: attachment; filename=%q\r\n", p.Filename)
		}
		// Base64 always: the boundary can then never occur in a body, and
		// long lines, CRs or non-ASCII bytes survive any mail parser.
		b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
		enc := base64.StdEncoding.EncodeToString(p.Content)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes()
}

// Split returns the parts of a user-data document: a gzip-compressed
// document is expanded, a MIME message is taken apart (nested multiparts
// too), and anything else is one part typed by its first line.
func Split(b []byte) ([]Part, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("user-data is %d bytes, limit %d", len(b), MaxSize)
	}
	if bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("user-data: gzip: %w", err)
		}
		u, err := io.ReadAll(io.LimitReader(zr, maxGunzip+1))
		if err != nil {
			return nil, fmt.Errorf("user-data: gzip: %w", err)
		}
		if len(u) > maxGunzip {
			return nil, fmt.Errorf("user-data expands to over %d bytes", maxGunzip)
		}
		b = u
	}
	if len(b) == 0 {
		return nil, errors.New("user-data is empty")
	}
	if b[0] == '#' {
		t, err := TypeOf(b)
		if err != nil {
			return nil, fmt.Errorf("user-data: %w", err)
		}
		return []Part{{Type: t, Content: b}}, nil
	}
	msg, err := mail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("user-data is neither a #-typed document nor a MIME message: %w", err)
	}
	var parts []Part
	if err := splitEntity(textproto.MIMEHeader(msg.Header), msg.Body, 0, &parts); err != nil {
		return nil, fmt.Errorf("user-data: %w", err)
	}
	if len(parts) == 0 {
		return nil, errors.New("user-data: MIME message has no parts")
	}
	return parts, nil
}

func splitEntity(h textproto.MIMEHeader, body io.Reader, depth int, out *[]Part) error {
	ct := h.Get("Content-Type")
	if ct == "" {
		return errors.New("MIME entity has no Content-Type")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return fmt.Errorf("bad Content-Type %q: %w", ct, err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		if depth >= maxDepth {
			return fmt.Errorf("multipart nested over %d deep", maxDepth)
		}
		boundary := params["boundary"]
		if boundary == "" {
			return fmt.Errorf("%s without a boundary", mt)
		}
		mr := multipart.NewReader(body, boundary)
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read MIME part: %w", err)
			}
			if err := splitEntity(p.Header, p, depth+1, out); err != nil {
				return err
			}
		}
	}
	if len(*out) >= maxParts {
		return fmt.Errorf("more than %d parts", maxParts)
	}
	content, err := io.ReadAll(io.LimitReader(body, maxGunzip+1))
	if err != nil {
		return fmt.Errorf("read %s part: %w", mt, err)
	}
	if len(content) > maxGunzip {
		return fmt.Errorf("%s part is over %d bytes", mt, maxGunzip)
	}
	switch enc := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); enc {
	case "", "7bit", "8bit", "binary":
		// multipart.Reader already decoded quoted-printable.
	case "base64":
		clean := bytes.Map(func(r rune) rune {
			if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, content)
		dec := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
		n, err := base64.StdEncoding.Decode(dec, clean)
		if err != nil {
			return fmt.Errorf("%s part: bad base64: %w", mt, err)
		}
		content = dec[:n]
	default:
		return fmt.Errorf("%s part: unsupported Content-Transfer-Encoding %q", mt, enc)
	}
	// cloud-init retypes text/plain and unknown parts by their first line.
	if mt == "text/plain" || mt == "text/x-not-multipart" {
		if t, err := TypeOf(content); err == nil {
			mt = t
		}
	}
	filename := ""
	if cd := h.Get("Content-Disposition"); cd != "" {
		if _, p, err := mime.ParseMediaType(cd); err == nil {
			filename = p["filename"]
		}
	}
	*out = append(*out, Part{Type: mt, Filename: filename, Content: content})
	return nil
}
