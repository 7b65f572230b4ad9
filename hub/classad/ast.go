package classad

import (
	"strings"
)

// Expr is a parsed ClassAd expression. Exprs are immutable and safe for
// concurrent evaluation. String returns the expression in ClassAd syntax,
// which Parse reads back to an equivalent Expr.
type Expr interface {
	String() string
	eval(st *evalState) Value
	write(b *strings.Builder)
	prec() int
}

// Operator precedences, lowest first.
const (
	precLowest  = iota
	precCond    // ?: and the Elvis operator
	precOr      // ||
	precAnd     // &&
	precBitOr   // |
	precBitXor  // ^
	precBitAnd  // &
	precEq      // == != =?= =!= is isnt
	precRel     // < <= > >=
	precShift   // << >> >>>
	precAdd     // + -
	precMul     // * / %
	precUnary   // ! - + ~
	precPostfix // . [] calls and primaries
)

type binOp uint8

const (
	opOr binOp = iota
	opAnd
	opBitOr
	opBitXor
	opBitAnd
	opEq
	opNe
	opMetaEq
	opMetaNe
	opLt
	opLe
	opGt
	opGe
	opShl
	opShr
	opUshr
	opAdd
	opSub
	opMul
	opDiv
	opMod
	opElvis
)

var binOps = [...]struct {
	text string
	prec int
}{
	opOr: {"||", precOr}, opAnd: {"&&", precAnd}, opBitOr: {"|", precBitOr},
	opBitXor: {"^", precBitXor}, opBitAnd: {"&", precBitAnd}, opEq: {"==", precEq},
	opNe: {"!=", precEq}, opMetaEq: {"=?=", precEq}, opMetaNe: {"=!=", precEq},
	opLt: {"<", precRel}, opLe: {"<=", precRel}, opGt: {">", precRel}, opGe: {">=", precRel},
	opShl: {"<<", precShift}, opShr: {">>", precShift}, opUshr: {">>>", precShift},
	opAdd: {"+", precAdd}, opSub: {"-", precAdd}, opMul: {"*", precMul}, opDiv: {"/", precMul},
	opMod: {"%", precMul}, opElvis: {"?:", precCond},
}

type scopeKind uint8

const (
	scopeNone   scopeKind = iota
	scopeMy               // MY.name
	scopeTarget           // TARGET.name
)

type (
	// literal is a constant value.
	literal struct{ v Value }
	// attrRef is a reference to an attribute, optionally scoped.
	attrRef struct {
		scope scopeKind
		name  string
		key   string // lower-cased name
	}
	unary struct {
		op byte // one of - + ! ~
		x  Expr
	}
	binary struct {
		op   binOp
		l, r Expr
	}
	// cond is c ? t : f.
	cond    struct{ c, t, f Expr }
	paren   struct{ x Expr }
	callExp struct {
		name string
		fn   *function // nil for an unknown function
		args []Expr
	}
	listExpr   struct{ elems []Expr }
	recordExpr struct{ ad *Ad }
	// selectExpr is x.name on a nested ClassAd.
	selectExpr struct {
		x         Expr
		name, key string
	}
	subscript struct{ x, idx Expr }
)

// Literal returns an expression that evaluates to v.
func Literal(v Value) Expr { return &literal{v: v} }

func exprString(e Expr) string {
	var b strings.Builder
	e.write(&b)
	return b.String()
}

// writeOperand writes e, in parentheses when it binds looser than min.
func writeOperand(b *strings.Builder, e Expr, min int) {
	if e.prec() < min {
		b.WriteByte('(')
		e.write(b)
		b.WriteByte(')')
		return
	}
	e.write(b)
}

// writeName writes an attribute name, quoted when it is not a plain
// identifier, when it is a keyword, or when it is MY or TARGET (which would
// read back as a scope prefix before a '.').
func writeName(b *strings.Builder, name string) {
	plain := name != "" && isIdentStart(name[0])
	for i := 1; plain && i < len(name); i++ {
		plain = isIdentChar(name[i])
	}
	lower := lowerASCII(name)
	if _, kw := keywords[lower]; plain && !kw && scopeNames[lower] == scopeNone {
		b.WriteString(name)
		return
	}
	writeQuoted(b, name, '\'')
}

func (n *literal) String() string    { return exprString(n) }
func (n *attrRef) String() string    { return exprString(n) }
func (n *unary) String() string      { return exprString(n) }
func (n *binary) String() string     { return exprString(n) }
func (n *cond) String() string       { return exprString(n) }
func (n *paren) String() string      { return exprString(n) }
func (n *callExp) String() string    { return exprString(n) }
func (n *listExpr) String() string   { return exprString(n) }
func (n *recordExpr) String() string { return exprString(n) }
func (n *selectExpr) String() string { return exprString(n) }
func (n *subscript) String() string  { return exprString(n) }

func (n *literal) prec() int {
	if n.v.kind == IntKind || n.v.kind == RealKind {
		// "-5", and "5.x" would read back as a malformed number.
		return precUnary
	}
	return precPostfix
}
func (n *attrRef) prec() int    { return precPostfix }
func (n *unary) prec() int      { return precUnary }
func (n *binary) prec() int     { return binOps[n.op].prec }
func (n *cond) prec() int       { return precCond }
func (n *paren) prec() int      { return precPostfix }
func (n *callExp) prec() int    { return precPostfix }
func (n *listExpr) prec() int   { return precPostfix }
func (n *recordExpr) prec() int { return precPostfix }
func (n *selectExpr) prec() int { return precPostfix }
func (n *subscript) prec() int  { return precPostfix }

func (n *literal) write(b *strings.Builder) { n.v.write(b) }

func (n *attrRef) write(b *strings.Builder) {
	switch n.scope {
	case scopeMy:
		b.WriteString("MY.")
	case scopeTarget:
		b.WriteString("TARGET.")
	}
	writeName(b, n.name)
}

func (n *unary) write(b *strings.Builder) {
	b.WriteByte(n.op)
	writeOperand(b, n.x, precUnary)
}

func (n *binary) write(b *strings.Builder) {
	p := binOps[n.op].prec
	left, right := p, p+1 // left-associative
	if n.op == opElvis {
		left, right = p+1, p
	}
	writeOperand(b, n.l, left)
	b.WriteByte(' ')
	b.WriteString(binOps[n.op].text)
	b.WriteByte(' ')
	writeOperand(b, n.r, right)
}

func (n *cond) write(b *strings.Builder) {
	writeOperand(b, n.c, precCond+1)
	b.WriteString(" ? ")
	writeOperand(b, n.t, precLowest)
	b.WriteString(" : ")
	writeOperand(b, n.f, precCond)
}

func (n *paren) write(b *strings.Builder) {
	b.WriteByte('(')
	n.x.write(b)
	b.WriteByte(')')
}

func (n *callExp) write(b *strings.Builder) {
	b.WriteString(n.name)
	b.WriteByte('(')
	for i, a := range n.args {
		if i > 0 {
			b.WriteByte(',')
		}
		a.write(b)
	}
	b.WriteByte(')')
}

func (n *listExpr) write(b *strings.Builder) {
	b.WriteString("{ ")
	for i, e := range n.elems {
		if i > 0 {
			b.WriteString(", ")
		}
		e.write(b)
	}
	b.WriteString(" }")
}

func (n *recordExpr) write(b *strings.Builder) { n.ad.writeRecord(b) }

func (n *selectExpr) write(b *strings.Builder) {
	writeOperand(b, n.x, precPostfix)
	b.WriteByte('.')
	writeName(b, n.name)
}

func (n *subscript) write(b *strings.Builder) {
	writeOperand(b, n.x, precPostfix)
	b.WriteByte('[')
	n.idx.write(b)
	b.WriteByte(']')
}
