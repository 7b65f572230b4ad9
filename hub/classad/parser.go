package classad

import "fmt"

// maxParseDepth bounds how deeply expressions may nest, so that hostile input
// cannot exhaust the stack of the parser, the printer or the evaluator.
const maxParseDepth = 400

// Parse parses one ClassAd expression in the new-ClassAd syntax (which
// condor_q/condor_status -long and -json print). The whole input must be one
// expression; errors are *ParseError values naming the byte offset and what
// was expected.
func Parse(src string) (e Expr, err error) {
	p := &parser{lex: lexer{src: src}}
	defer func() {
		if r := recover(); r != nil {
			pf, ok := r.(parseFailure)
			if !ok {
				panic(r)
			}
			e, err = nil, pf.err
		}
	}()
	p.advance()
	e = p.expr(precLowest)
	if p.tok.kind != tEOF {
		p.unexpected("an operator or end of input")
	}
	return e, nil
}

// MustParse is like Parse but panics on error. It is meant for expressions
// written in the program itself.
func MustParse(src string) Expr {
	e, err := Parse(src)
	if err != nil {
		panic(err)
	}
	return e
}

type parseFailure struct{ err error }

type parser struct {
	lex   lexer
	tok   token
	depth int
}

func (p *parser) fail(err error) { panic(parseFailure{err}) }

func (p *parser) advance() {
	t, err := p.lex.next()
	if err != nil {
		p.fail(err)
	}
	p.tok = t
}

func (p *parser) unexpected(want string) {
	p.fail(&ParseError{Pos: p.tok.pos, Msg: fmt.Sprintf("expected %s, found %s", want, p.tok.describe())})
}

func (p *parser) expect(k tokKind) token {
	if p.tok.kind != k {
		p.unexpected(tokNames[k])
	}
	t := p.tok
	p.advance()
	return t
}

func (p *parser) enter() {
	p.depth++
	if p.depth > maxParseDepth {
		p.fail(&ParseError{Pos: p.tok.pos, Msg: fmt.Sprintf("expression nested more than %d levels deep", maxParseDepth)})
	}
}

// infix maps a token to its binary operator.
var infix = map[tokKind]binOp{
	tOr: opOr, tAnd: opAnd, tBitOr: opBitOr, tBitXor: opBitXor, tBitAnd: opBitAnd,
	tEq: opEq, tNe: opNe, tMetaEq: opMetaEq, tMetaNe: opMetaNe,
	tLt: opLt, tLe: opLe, tGt: opGt, tGe: opGe, tShl: opShl, tShr: opShr, tUshr: opUshr,
	tPlus: opAdd, tMinus: opSub, tMul: opMul, tDiv: opDiv, tMod: opMod,
}

var scopeNames = map[string]scopeKind{"my": scopeMy, "target": scopeTarget}

// expr parses operators that bind tighter than minPrec (Pratt parsing).
func (p *parser) expr(minPrec int) Expr {
	p.enter()
	defer func() { p.depth-- }()
	left := p.unary()
	for {
		if p.tok.kind == tQuestion {
			if precCond <= minPrec {
				return left
			}
			p.advance()
			if p.tok.kind == tColon { // Elvis: a ?: b
				p.advance()
				left = &binary{op: opElvis, l: left, r: p.expr(precLowest)}
				continue
			}
			t := p.expr(precLowest)
			if p.tok.kind != tColon {
				p.unexpected("':' of the ?: operator")
			}
			p.advance()
			left = &cond{c: left, t: t, f: p.expr(precLowest)}
			continue
		}
		op, ok := infix[p.tok.kind]
		if !ok || binOps[op].prec <= minPrec {
			return left
		}
		p.advance()
		left = &binary{op: op, l: left, r: p.expr(binOps[op].prec)}
	}
}

func (p *parser) unary() Expr {
	switch p.tok.kind {
	case tMinus, tPlus, tNot, tBitNot:
		op := p.tok.text[0]
		p.enter()
		defer func() { p.depth-- }()
		p.advance()
		return &unary{op: op, x: p.unary()}
	}
	return p.postfix(p.primary())
}

func (p *parser) postfix(x Expr) Expr {
	for {
		switch p.tok.kind {
		case tDot:
			p.advance()
			name := p.expect(tIdent).text
			x = &selectExpr{x: x, name: name, key: lowerASCII(name)}
		case tLBracket:
			p.advance()
			idx := p.expr(precLowest)
			p.expect(tRBracket)
			x = &subscript{x: x, idx: idx}
		default:
			return x
		}
	}
}

func (p *parser) primary() Expr {
	t := p.tok
	switch t.kind {
	case tInt:
		p.advance()
		return &literal{v: IntValue(t.i)}
	case tReal:
		p.advance()
		return &literal{v: RealValue(t.f)}
	case tString:
		p.advance()
		return &literal{v: StringValue(t.text)}
	case tTrue, tFalse:
		p.advance()
		return &literal{v: BoolValue(t.kind == tTrue)}
	case tUndefined:
		p.advance()
		return &literal{v: undefinedValue}
	case tError:
		p.advance()
		return &literal{v: errorValue}
	case tIdent:
		p.advance()
		if t.quoted {
			return &attrRef{name: t.text, key: lowerASCII(t.text)}
		}
		if p.tok.kind == tLParen {
			return p.call(t.text)
		}
		if p.tok.kind == tDot {
			if sc := scopeNames[lowerASCII(t.text)]; sc != scopeNone {
				p.advance()
				name := p.expect(tIdent).text
				return &attrRef{scope: sc, name: name, key: lowerASCII(name)}
			}
		}
		return &attrRef{name: t.text, key: lowerASCII(t.text)}
	case tLParen:
		p.advance()
		x := p.expr(precLowest)
		p.expect(tRParen)
		return &paren{x: x}
	case tLBrace:
		p.advance()
		l := &listExpr{}
		for p.tok.kind != tRBrace {
			if len(l.elems) > 0 {
				if p.tok.kind != tComma {
					p.unexpected("',' or '}'")
				}
				p.advance()
			}
			l.elems = append(l.elems, p.expr(precLowest))
		}
		p.advance()
		return l
	case tLBracket:
		return p.record()
	}
	p.unexpected("an expression")
	return nil
}

func (p *parser) call(name string) Expr {
	p.advance() // '('
	c := &callExp{name: name, fn: functions[lowerASCII(name)]}
	for p.tok.kind != tRParen {
		if len(c.args) > 0 {
			if p.tok.kind != tComma {
				p.unexpected("',' or ')'")
			}
			p.advance()
		}
		c.args = append(c.args, p.expr(precLowest))
	}
	p.advance()
	return c
}

// record parses a nested ClassAd: [ name = expr; ... ] with an optional
// trailing ';'.
func (p *parser) record() Expr {
	p.advance() // '['
	ad := NewAd()
	for p.tok.kind != tRBracket {
		name := p.expect(tIdent).text
		p.expect(tAssign)
		ad.Set(name, p.expr(precLowest))
		if p.tok.kind == tSemi {
			p.advance()
		} else if p.tok.kind != tRBracket {
			p.unexpected("';' or ']'")
		}
	}
	p.advance()
	return &recordExpr{ad: ad}
}
