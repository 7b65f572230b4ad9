package classad

import (
	"math"
	"sync"
	"time"
)

// Env holds what evaluation needs from outside the ads. The zero Env uses
// the system clock and discards debug() output.
type Env struct {
	// Now returns the current time for time() and CurrentTime; nil means time.Now.
	Now func() time.Time
	// Debug receives the argument and value of each debug() call; nil discards them.
	Debug func(e Expr, v Value)
}

var defaultEnv = &Env{}

const (
	// maxAttrDepth bounds nested attribute references (A refers to B refers to C ...).
	maxAttrDepth = 200
	// maxAttrSteps bounds attribute references followed in one evaluation, so
	// that a hostile ad cannot make evaluation exponentially slow.
	maxAttrSteps = 1 << 20
)

// scope is where unscoped names are looked up: ad first, then the enclosing
// ads of a nested ClassAd (outer), then target. MY is my, TARGET is target.
type scope struct {
	ad     *Ad
	outer  *scope
	my     *Ad
	target *Ad
}

type evalState struct {
	env   *Env
	sc    scope
	stack []*attrEntry // attributes being evaluated, to catch cycles
	steps int
}

var statePool = sync.Pool{New: func() any { return &evalState{stack: make([]*attrEntry, 0, 16)} }}

var emptyAd = NewAd()

func (env *Env) begin(my, target *Ad) *evalState {
	if my == nil {
		my = emptyAd
	}
	st := statePool.Get().(*evalState)
	st.env, st.sc, st.steps = env, scope{ad: my, my: my, target: target}, 0
	return st
}

func (env *Env) end(st *evalState) {
	st.env, st.sc = nil, scope{}
	statePool.Put(st)
}

func (env *Env) now() time.Time {
	if env.Now != nil {
		return env.Now()
	}
	return time.Now()
}

// Eval evaluates e with my as the MY ad and target as the TARGET ad (either
// may be nil).
func (env *Env) Eval(e Expr, my, target *Ad) Value {
	st := env.begin(my, target)
	v := e.eval(st)
	env.end(st)
	return v
}

// EvalAttr evaluates attribute name of my, with target as the TARGET ad. A
// missing attribute is undefined.
func (env *Env) EvalAttr(my *Ad, name string, target *Ad) Value {
	return env.evalEntry(my, my.lookupName(name), target)
}

func (env *Env) evalEntry(my *Ad, ent *attrEntry, target *Ad) Value {
	if ent == nil {
		return undefinedValue
	}
	st := env.begin(my, target)
	v := st.evalEntry(ent, st.sc)
	env.end(st)
	return v
}

// Eval evaluates e with my as the MY ad and target as the TARGET ad, using
// the system clock.
func Eval(e Expr, my, target *Ad) Value { return defaultEnv.Eval(e, my, target) }

// Eval evaluates attribute name of a on its own (TARGET.x is undefined).
func (a *Ad) Eval(name string) Value { return defaultEnv.EvalAttr(a, name, nil) }

// EvalAgainst evaluates attribute name of a with target as the TARGET ad.
func (a *Ad) EvalAgainst(name string, target *Ad) Value {
	return defaultEnv.EvalAttr(a, name, target)
}

// evalEntry evaluates an attribute's expression in scope sc. A reference
// cycle, or nesting or work past the limits, gives error.
func (st *evalState) evalEntry(ent *attrEntry, sc scope) Value {
	if lit, ok := ent.expr.(*literal); ok {
		return lit.v
	}
	if len(st.stack) >= maxAttrDepth || st.steps >= maxAttrSteps {
		return errorValue
	}
	for _, e := range st.stack {
		if e == ent {
			return errorValue
		}
	}
	st.steps++
	st.stack = append(st.stack, ent)
	saved := st.sc
	st.sc = sc
	v := ent.expr.eval(st)
	st.sc = saved
	st.stack[len(st.stack)-1] = nil
	st.stack = st.stack[:len(st.stack)-1]
	return v
}

func (n *literal) eval(*evalState) Value { return n.v }

func (n *attrRef) eval(st *evalState) Value {
	sc := &st.sc
	switch n.scope {
	case scopeMy:
		if ent := sc.my.lookupKey(n.key); ent != nil {
			return st.evalEntry(ent, scope{ad: sc.my, my: sc.my, target: sc.target})
		}
		return undefinedValue
	case scopeTarget:
		return st.evalInTarget(n.key)
	}
	for s := sc; s != nil; s = s.outer {
		if ent := s.ad.lookupKey(n.key); ent != nil {
			return st.evalEntry(ent, *s)
		}
	}
	if v := st.evalInTarget(n.key); v.kind != UndefinedKind {
		return v
	}
	if n.key == "currenttime" && sc.target.lookupKey(n.key) == nil {
		return IntValue(st.env.now().Unix())
	}
	return undefinedValue
}

// evalInTarget evaluates the target ad's attribute key in the target's own
// scope, where MY and TARGET swap.
func (st *evalState) evalInTarget(key string) Value {
	t := st.sc.target
	if ent := t.lookupKey(key); ent != nil {
		return st.evalEntry(ent, scope{ad: t, my: t, target: st.sc.my})
	}
	return undefinedValue
}

func (n *paren) eval(st *evalState) Value { return n.x.eval(st) }

func (n *unary) eval(st *evalState) Value {
	v := n.x.eval(st)
	if v.kind == UndefinedKind || v.kind == ErrorKind {
		return v
	}
	switch n.op {
	case '-':
		switch v.kind {
		case IntKind:
			return IntValue(-v.i)
		case RealKind:
			return RealValue(-v.float())
		}
	case '+':
		if v.kind == IntKind || v.kind == RealKind {
			return v
		}
	case '!':
		if b, ok := boolEquiv(v); ok {
			return BoolValue(!b)
		}
	case '~':
		if v.kind == IntKind {
			return IntValue(^v.i)
		}
	}
	return errorValue
}

func (n *cond) eval(st *evalState) Value {
	c := n.c.eval(st)
	if b, ok := boolEquiv(c); ok {
		if b {
			return n.t.eval(st)
		}
		return n.f.eval(st)
	}
	if c.kind == UndefinedKind {
		return undefinedValue
	}
	return errorValue
}

func (n *binary) eval(st *evalState) Value {
	switch n.op {
	case opAnd:
		a := n.l.eval(st)
		if b, ok := boolEquiv(a); ok && !b {
			return falseValue
		}
		return logical(true, a, n.r.eval(st))
	case opOr:
		a := n.l.eval(st)
		if b, ok := boolEquiv(a); ok && b {
			return trueValue
		}
		return logical(false, a, n.r.eval(st))
	case opElvis:
		if a := n.l.eval(st); a.kind != UndefinedKind {
			return a
		}
		return n.r.eval(st)
	}
	a, b := n.l.eval(st), n.r.eval(st)
	switch n.op {
	case opMetaEq:
		return identical(a, b, false)
	case opMetaNe:
		return identical(a, b, true)
	}
	// The remaining operators are strict: error wins over undefined.
	if a.kind == ErrorKind || b.kind == ErrorKind {
		return errorValue
	}
	if a.kind == UndefinedKind || b.kind == UndefinedKind {
		return undefinedValue
	}
	switch n.op {
	case opEq, opNe, opLt, opLe, opGt, opGe:
		return compare(n.op, a, b)
	case opAdd, opSub, opMul, opDiv, opMod:
		return arith(n.op, a, b)
	}
	return bitwise(n.op, a, b)
}

// logical combines the operands of && (and) or || (!and) once the left one
// did not decide the result on its own. Numbers count as booleans; any other
// type is error.
func logical(and bool, a, b Value) Value {
	if x, ok := boolEquiv(a); ok {
		a = BoolValue(x)
	} else if a.kind != UndefinedKind && a.kind != ErrorKind {
		return errorValue
	}
	if x, ok := boolEquiv(b); ok {
		b = BoolValue(x)
	} else if b.kind != UndefinedKind && b.kind != ErrorKind {
		return errorValue
	}
	switch a.kind {
	case ErrorKind:
		return errorValue
	case BoolKind: // true for &&, false for ||: the result is the right side
		return b
	}
	// a is undefined
	if b.kind != BoolKind {
		return b
	}
	if b.IsTrue() != and { // false && ... or true || ...
		return b
	}
	return undefinedValue
}

// identical implements =?= (and =!= when negate): same type and same value,
// strings compared case-sensitively; never undefined.
func identical(a, b Value, negate bool) Value {
	if a.kind != b.kind {
		return BoolValue(negate)
	}
	var same bool
	switch a.kind {
	case UndefinedKind, ErrorKind:
		same = true
	case BoolKind, IntKind:
		same = a.i == b.i
	case RealKind:
		same = a.float() == b.float()
	case StringKind:
		same = a.s == b.s
	default: // lists and ads cannot be compared, as in HTCondor
		return errorValue
	}
	return BoolValue(same != negate)
}

func isNumeric(v Value) bool { return v.kind == IntKind || v.kind == RealKind || v.kind == BoolKind }

// toReal converts a number or boolean to a real.
func toReal(v Value) float64 {
	if v.kind == RealKind {
		return v.float()
	}
	return float64(v.i)
}

// compare implements == != < <= > >= on non-exceptional values: strings
// compare case-insensitively with strings only; numbers and booleans are
// promoted (booleans to 0/1, integers to reals when the other side is real);
// anything else is error.
func compare(op binOp, a, b Value) Value {
	var c int
	switch {
	case a.kind == StringKind && b.kind == StringKind:
		c = compareFold(a.s, b.s)
	case isNumeric(a) && isNumeric(b):
		if a.kind == RealKind || b.kind == RealKind {
			x, y := toReal(a), toReal(b)
			switch op {
			case opEq:
				return BoolValue(x == y)
			case opNe:
				return BoolValue(x != y)
			case opLt:
				return BoolValue(x < y)
			case opLe:
				return BoolValue(x <= y)
			case opGt:
				return BoolValue(x > y)
			}
			return BoolValue(x >= y)
		}
		switch {
		case a.i < b.i:
			c = -1
		case a.i > b.i:
			c = 1
		}
	default:
		return errorValue
	}
	switch op {
	case opEq:
		return BoolValue(c == 0)
	case opNe:
		return BoolValue(c != 0)
	case opLt:
		return BoolValue(c < 0)
	case opLe:
		return BoolValue(c <= 0)
	case opGt:
		return BoolValue(c > 0)
	}
	return BoolValue(c >= 0)
}

// arith implements + - * / % on non-exceptional values: booleans count as
// 0/1, integer arithmetic wraps and truncates toward zero like C, division
// or modulus by zero is error, real modulus is error (as in HTCondor) and a
// real result of +Inf is error.
func arith(op binOp, a, b Value) Value {
	if !isNumeric(a) || !isNumeric(b) {
		return errorValue
	}
	if a.kind != RealKind && b.kind != RealKind {
		x, y := a.i, b.i
		switch op {
		case opAdd:
			return IntValue(x + y)
		case opSub:
			return IntValue(x - y)
		case opMul:
			return IntValue(x * y)
		case opDiv:
			if y == 0 {
				return errorValue
			}
			if x == math.MinInt64 && y == -1 {
				return IntValue(math.MaxInt64)
			}
			return IntValue(x / y)
		}
		if y == 0 {
			return errorValue
		}
		return IntValue(x % y)
	}
	x, y := toReal(a), toReal(b)
	var r float64
	switch op {
	case opAdd:
		r = x + y
	case opSub:
		r = x - y
	case opMul:
		r = x * y
	case opDiv:
		if y == 0 {
			return errorValue
		}
		r = x / y
	default:
		return errorValue
	}
	if math.IsInf(r, 1) {
		return errorValue
	}
	return RealValue(r)
}

// bitwise implements | ^ & << >> >>> on integers; shift counts use their low
// six bits, >> is arithmetic and >>> logical.
func bitwise(op binOp, a, b Value) Value {
	if a.kind != IntKind || b.kind != IntKind {
		return errorValue
	}
	x, y := a.i, b.i
	switch op {
	case opBitOr:
		return IntValue(x | y)
	case opBitXor:
		return IntValue(x ^ y)
	case opBitAnd:
		return IntValue(x & y)
	case opShl:
		return IntValue(x << (y & 63))
	case opShr:
		return IntValue(x >> (y & 63))
	}
	return IntValue(int64(uint64(x) >> (y & 63)))
}

func (n *callExp) eval(st *evalState) Value {
	if n.fn == nil {
		return errorValue
	}
	return n.fn.impl(st, n.args)
}

func (n *listExpr) eval(st *evalState) Value {
	vs := make([]Value, len(n.elems))
	for i, e := range n.elems {
		vs[i] = e.eval(st)
	}
	return ListValue(vs...)
}

func (n *recordExpr) eval(st *evalState) Value {
	outer := st.sc
	return Value{kind: AdKind, ref: &ref{ad: n.ad, sc: scope{ad: n.ad, outer: &outer, my: outer.my, target: outer.target}}}
}

func (n *selectExpr) eval(st *evalState) Value {
	v := n.x.eval(st)
	switch v.kind {
	case AdKind:
		if ent := v.ref.ad.lookupKey(n.key); ent != nil {
			return st.evalEntry(ent, v.ref.sc)
		}
		return undefinedValue
	case UndefinedKind:
		return undefinedValue
	}
	return errorValue
}

func (n *subscript) eval(st *evalState) Value {
	v, i := n.x.eval(st), n.idx.eval(st)
	switch {
	case v.kind == ErrorKind || i.kind == ErrorKind:
		return errorValue
	case v.kind == UndefinedKind || i.kind == UndefinedKind:
		return undefinedValue
	case v.kind == ListKind && i.kind == IntKind:
		if i.i < 0 || i.i >= int64(len(v.ref.list)) {
			return errorValue
		}
		return v.ref.list[i.i]
	case v.kind == AdKind && i.kind == StringKind:
		if ent := v.ref.ad.lookupKey(lowerASCII(i.s)); ent != nil {
			return st.evalEntry(ent, v.ref.sc)
		}
		return undefinedValue
	}
	return errorValue
}
