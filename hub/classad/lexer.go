package classad

import (
	"fmt"
	"strconv"
	"strings"
)

type tokKind uint8

const (
	tEOF tokKind = iota
	tInt
	tReal
	tString
	tIdent
	tTrue
	tFalse
	tUndefined
	tError
	tLParen
	tRParen
	tLBrace
	tRBrace
	tLBracket
	tRBracket
	tComma
	tSemi
	tDot
	tQuestion
	tColon
	tAssign
	tOr
	tAnd
	tBitOr
	tBitXor
	tBitAnd
	tEq
	tNe
	tMetaEq
	tMetaNe
	tLt
	tLe
	tGt
	tGe
	tShl
	tShr
	tUshr
	tPlus
	tMinus
	tMul
	tDiv
	tMod
	tNot
	tBitNot
)

var tokNames = map[tokKind]string{
	tEOF: "end of input", tInt: "integer", tReal: "real", tString: "string",
	tIdent: "name", tLParen: "'('", tRParen: "')'", tLBrace: "'{'", tRBrace: "'}'",
	tLBracket: "'['", tRBracket: "']'", tComma: "','", tSemi: "';'", tDot: "'.'",
	tQuestion: "'?'", tColon: "':'", tAssign: "'='",
}

// token is one lexeme. text is the source text (for names: the name, for
// strings: the unescaped value).
type token struct {
	kind tokKind
	pos  int
	text string
	i    int64
	f    float64
	// quoted is set on a name written in single quotes ('name'), which can
	// never be a function name or a scope prefix.
	quoted bool
}

func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "end of input"
	case tString:
		return "string " + strconv.Quote(t.text)
	case tIdent:
		return "name " + strconv.Quote(t.text)
	}
	return strconv.Quote(t.text)
}

// ParseError is a syntax error in a ClassAd expression.
type ParseError struct {
	Pos int    // byte offset into the input
	Msg string // what was expected and what was found
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("parse error at offset %d: %s", e.Pos, e.Msg)
}

// lexer splits a ClassAd expression into tokens.
type lexer struct {
	src string
	pos int
}

var keywords = map[string]tokKind{
	"true": tTrue, "false": tFalse, "undefined": tUndefined, "error": tError,
	"is": tMetaEq, "isnt": tMetaNe,
}

// operators, longest first so that "=?=" wins over "=" and ">>>" over ">>".
var operators = []struct {
	text string
	kind tokKind
}{
	{">>>", tUshr}, {"=?=", tMetaEq}, {"=!=", tMetaNe},
	{"||", tOr}, {"&&", tAnd}, {"==", tEq}, {"!=", tNe}, {"<=", tLe}, {">=", tGe},
	{"<<", tShl}, {">>", tShr},
	{"(", tLParen}, {")", tRParen}, {"{", tLBrace}, {"}", tRBrace}, {"[", tLBracket},
	{"]", tRBracket}, {",", tComma}, {";", tSemi}, {".", tDot}, {"?", tQuestion},
	{":", tColon}, {"=", tAssign}, {"|", tBitOr}, {"^", tBitXor}, {"&", tBitAnd},
	{"<", tLt}, {">", tGt}, {"+", tPlus}, {"-", tMinus}, {"*", tMul}, {"/", tDiv},
	{"%", tMod}, {"!", tNot}, {"~", tBitNot},
}

func isIdentStart(c byte) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) }

func (l *lexer) errorf(pos int, format string, args ...any) error {
	return &ParseError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// skipSpace skips white space and // and /* */ comments.
func (l *lexer) skipSpace() error {
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.pos++
		case strings.HasPrefix(l.src[l.pos:], "//"):
			end := strings.IndexByte(l.src[l.pos:], '\n')
			if end < 0 {
				l.pos = len(l.src)
			} else {
				l.pos += end + 1
			}
		case strings.HasPrefix(l.src[l.pos:], "/*"):
			end := strings.Index(l.src[l.pos+2:], "*/")
			if end < 0 {
				return l.errorf(l.pos, "unterminated /* comment")
			}
			l.pos += end + 4
		default:
			return nil
		}
	}
	return nil
}

// next returns the next token.
func (l *lexer) next() (token, error) {
	if err := l.skipSpace(); err != nil {
		return token{}, err
	}
	start := l.pos
	if start >= len(l.src) {
		return token{kind: tEOF, pos: start}, nil
	}
	c := l.src[start]
	switch {
	case isIdentStart(c):
		for l.pos < len(l.src) && isIdentChar(l.src[l.pos]) {
			l.pos++
		}
		text := l.src[start:l.pos]
		if k, ok := keywords[lowerASCII(text)]; ok {
			return token{kind: k, pos: start, text: text}, nil
		}
		return token{kind: tIdent, pos: start, text: text}, nil
	case isDigit(c) || c == '.' && start+1 < len(l.src) && isDigit(l.src[start+1]):
		return l.number()
	case c == '"':
		s, err := l.quoted('"')
		return token{kind: tString, pos: start, text: s}, err
	case c == '\'':
		s, err := l.quoted('\'')
		if err == nil && s == "" {
			err = l.errorf(start, "empty quoted attribute name")
		}
		return token{kind: tIdent, pos: start, text: s, quoted: true}, err
	}
	for _, op := range operators {
		if strings.HasPrefix(l.src[start:], op.text) {
			l.pos += len(op.text)
			return token{kind: op.kind, pos: start, text: op.text}, nil
		}
	}
	return token{}, l.errorf(start, "unexpected character %q", c)
}

// number reads an integer or a real: digits, an optional fraction and an
// optional exponent.
func (l *lexer) number() (token, error) {
	start := l.pos
	for l.pos < len(l.src) && isDigit(l.src[l.pos]) {
		l.pos++
	}
	isReal := false
	if l.pos < len(l.src) && l.src[l.pos] == '.' && !(l.pos+1 < len(l.src) && isIdentStart(l.src[l.pos+1]) &&
		l.src[l.pos+1] != 'e' && l.src[l.pos+1] != 'E') {
		isReal = true
		l.pos++
		for l.pos < len(l.src) && isDigit(l.src[l.pos]) {
			l.pos++
		}
	}
	if l.pos < len(l.src) && (l.src[l.pos] == 'e' || l.src[l.pos] == 'E') {
		p := l.pos + 1
		if p < len(l.src) && (l.src[p] == '+' || l.src[p] == '-') {
			p++
		}
		if p < len(l.src) && isDigit(l.src[p]) {
			isReal = true
			for p < len(l.src) && isDigit(l.src[p]) {
				p++
			}
			l.pos = p
		}
	}
	text := l.src[start:l.pos]
	if l.pos < len(l.src) && isIdentChar(l.src[l.pos]) {
		return token{}, l.errorf(start, "malformed number %q", l.src[start:l.pos+1])
	}
	if isReal {
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return token{}, l.errorf(start, "real literal %s out of range", text)
		}
		return token{kind: tReal, pos: start, text: text, f: f}, nil
	}
	i, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return token{}, l.errorf(start, "integer literal %s out of range", text)
	}
	return token{kind: tInt, pos: start, text: text, i: i}, nil
}

// quoted reads a string (or quoted name) and converts its backslash escapes
// like HTCondor: \a \b \f \n \r \t \v \\ \? \' \" and up to three octal
// digits; any other escaped character stands for itself. A NUL is rejected.
func (l *lexer) quoted(q byte) (string, error) {
	start := l.pos
	l.pos++
	var b strings.Builder
	for {
		if l.pos >= len(l.src) {
			what := "string"
			if q == '\'' {
				what = "quoted name"
			}
			return "", l.errorf(start, "unterminated %s", what)
		}
		c := l.src[l.pos]
		l.pos++
		if c == q {
			return b.String(), nil
		}
		if c == 0 {
			return "", l.errorf(l.pos-1, "NUL character in string")
		}
		if c != '\\' || l.pos >= len(l.src) {
			b.WriteByte(c)
			continue
		}
		esc := l.pos - 1
		c = l.src[l.pos]
		l.pos++
		switch c {
		case 'a':
			c = '\a'
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		case 'v':
			c = '\v'
		case '0', '1', '2', '3', '4', '5', '6', '7':
			n := int(c - '0')
			if l.pos < len(l.src) && '0' <= l.src[l.pos] && l.src[l.pos] <= '7' {
				n = n<<3 + int(l.src[l.pos]-'0')
				l.pos++
				if n < 0x20 && l.pos < len(l.src) && '0' <= l.src[l.pos] && l.src[l.pos] <= '7' {
					n = n<<3 + int(l.src[l.pos]-'0')
					l.pos++
				}
			}
			c = byte(n)
		}
		if c == 0 {
			return "", l.errorf(esc, "NUL character in string")
		}
		b.WriteByte(c)
	}
}
