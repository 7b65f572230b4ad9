package gluster

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
)

// ErrGlusterdDown means the gluster CLI could not reach glusterd (it then
// prints a plain-text message and exits 1, whatever --xml asked).
var ErrGlusterdDown = errors.New("glusterd is not reachable")

// NotXMLError is returned when a command that was asked for XML printed
// something else: gluster ignores --xml for some commands and prints its
// failures as text.
type NotXMLError struct {
	// FirstLine is the first non-blank line of the output, truncated.
	FirstLine string
}

func (e *NotXMLError) Error() string {
	return fmt.Sprintf("output is not XML (the command may ignore --xml): %q", e.FirstLine)
}

// OpError is a failure gluster reported inside well-formed XML (opRet != 0).
type OpError struct {
	Ret   int
	Errno int
	// Msg is gluster's opErrstr (or its output element when that is empty).
	Msg string
}

func (e *OpError) Error() string {
	return fmt.Sprintf("gluster failed (opRet %d, opErrno %d): %s", e.Ret, e.Errno, e.Msg)
}

// connFailed is what the CLI prints when glusterd does not answer.
const connFailed = "Connection failed. Please check if gluster daemon is operational"

// cliHeader is the envelope every gluster --xml answer shares.
type cliHeader struct {
	OpRet    string `xml:"opRet"`
	OpErrno  string `xml:"opErrno"`
	OpErrstr string `xml:"opErrstr"`
	Output   string `xml:"output"`
}

// header lets decodeCLI reach the envelope embedded in each answer type.
type header interface{ hdr() *cliHeader }

func (h *cliHeader) hdr() *cliHeader { return h }

// decodeCLI checks a command's stdout and decodes its XML into v. It
// returns ErrGlusterdDown, a *NotXMLError or an *OpError for gluster's own
// failure modes, and a plain error for malformed XML.
func decodeCLI(out []byte, v header) error {
	trimmed := bytes.TrimSpace(out)
	if len(trimmed) == 0 {
		return errors.New("empty output")
	}
	if bytes.Contains(trimmed, []byte(connFailed)) {
		return ErrGlusterdDown
	}
	if trimmed[0] != '<' {
		return &NotXMLError{FirstLine: firstLine(trimmed)}
	}
	if !bytes.Contains(trimmed, []byte("<cliOutput")) {
		return fmt.Errorf("malformed XML: no cliOutput element")
	}
	if err := xml.Unmarshal(trimmed, v); err != nil {
		return fmt.Errorf("malformed XML: %w", err)
	}
	h := v.hdr()
	ret, err := atoiField("opRet", h.OpRet)
	if err != nil {
		return err
	}
	if ret != 0 {
		errno, _ := atoiField("opErrno", h.OpErrno)
		msg := strings.TrimSpace(h.OpErrstr)
		if msg == "" {
			msg = strings.TrimSpace(h.Output)
		}
		return &OpError{Ret: ret, Errno: errno, Msg: msg}
	}
	return nil
}

// firstLine returns the first non-blank line of b, at most 200 bytes.
func firstLine(b []byte) string {
	for _, l := range bytes.Split(b, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) == 0 {
			continue
		}
		if len(l) > 200 {
			l = l[:200]
		}
		return string(l)
	}
	return ""
}

// CheckOutput classifies the output of any gluster command, without
// decoding a body: nil for a well-formed XML answer with opRet 0, else the
// same errors as the parsers (ErrGlusterdDown, *NotXMLError, *OpError or a
// malformed-XML error).
func CheckOutput(out []byte) error {
	var h cliHeader
	return decodeCLI(out, &h)
}
