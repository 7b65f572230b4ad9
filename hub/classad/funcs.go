package classad

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// function is a built-in ClassAd function. It receives its arguments
// unevaluated so that ifThenElse can be lazy.
type function struct {
	impl func(st *evalState, args []Expr) Value
}

// functions maps lower-cased names to built-ins. Names not listed here parse
// but evaluate to error, as in HTCondor.
var functions map[string]*function

func init() {
	functions = map[string]*function{
		"ifthenelse":        {fnIfThenElse},
		"isundefined":       isKind(UndefinedKind),
		"iserror":           isKind(ErrorKind),
		"isstring":          isKind(StringKind),
		"isinteger":         isKind(IntKind),
		"isreal":            isKind(RealKind),
		"isboolean":         isKind(BoolKind),
		"islist":            isKind(ListKind),
		"isclassad":         isKind(AdKind),
		"member":            {func(st *evalState, args []Expr) Value { return member(st, args, false) }},
		"identicalmember":   {func(st *evalState, args []Expr) Value { return member(st, args, true) }},
		"stringlistmember":  {func(st *evalState, args []Expr) Value { return stringListMember(st, args, false) }},
		"stringlistimember": {func(st *evalState, args []Expr) Value { return stringListMember(st, args, true) }},
		"regexp":            {fnRegexp},
		"size":              {fnSize},
		"strcat":            {fnStrcat},
		"substr":            {fnSubstr},
		"strcmp":            {func(st *evalState, args []Expr) Value { return strcmpFn(st, args, false) }},
		"stricmp":           {func(st *evalState, args []Expr) Value { return strcmpFn(st, args, true) }},
		"tolower":           {func(st *evalState, args []Expr) Value { return changeCase(st, args, false) }},
		"toupper":           {func(st *evalState, args []Expr) Value { return changeCase(st, args, true) }},
		"string":            {fnString},
		"int":               {fnInt},
		"real":              {fnReal},
		"floor":             {func(st *evalState, args []Expr) Value { return round(st, args, math.Floor) }},
		"ceiling":           {func(st *evalState, args []Expr) Value { return round(st, args, math.Ceil) }},
		"ceil":              {func(st *evalState, args []Expr) Value { return round(st, args, math.Ceil) }},
		"round":             {func(st *evalState, args []Expr) Value { return round(st, args, math.RoundToEven) }},
		"min":               {func(st *evalState, args []Expr) Value { return minMax(st, args, true) }},
		"max":               {func(st *evalState, args []Expr) Value { return minMax(st, args, false) }},
		"time":              {fnTime},
		"debug":             {fnDebug},
	}
}

// fnIfThenElse: ifThenElse(c, t, f) evaluates only the branch it takes;
// undefined c gives undefined, and c that is neither boolean nor number error.
func fnIfThenElse(st *evalState, args []Expr) Value {
	if len(args) != 3 {
		return errorValue
	}
	c := args[0].eval(st)
	if b, ok := boolEquiv(c); ok {
		if b {
			return args[1].eval(st)
		}
		return args[2].eval(st)
	}
	if c.kind == UndefinedKind {
		return undefinedValue
	}
	return errorValue
}

func isKind(k Kind) *function {
	return &function{func(st *evalState, args []Expr) Value {
		if len(args) != 1 {
			return errorValue
		}
		return BoolValue(args[0].eval(st).kind == k)
	}}
}

// member(x, list) is true when an element == x (identicalMember: =?= x).
// An undefined list, or an undefined x for member, gives undefined.
func member(st *evalState, args []Expr, identicalOnly bool) Value {
	if len(args) != 2 {
		return errorValue
	}
	x, l := args[0].eval(st), args[1].eval(st)
	if l.kind == UndefinedKind || !identicalOnly && x.kind == UndefinedKind {
		return undefinedValue
	}
	if l.kind != ListKind || x.kind == ListKind || x.kind == AdKind || !identicalOnly && x.kind == ErrorKind {
		return errorValue
	}
	for _, e := range l.ref.list {
		var r Value
		switch {
		case identicalOnly:
			r = identical(e, x, false)
		case e.kind == ErrorKind:
			r = errorValue
		case e.kind == UndefinedKind:
			r = undefinedValue
		default:
			r = compare(opEq, e, x)
		}
		if r.IsTrue() {
			return trueValue
		}
	}
	return falseValue
}

// stringListMember(x, list [, delimiters]) tells whether x is an item of the
// delimited string list (default delimiters: comma and white space), compared
// exactly or, for stringListIMember, ignoring case. An undefined argument
// counts as the empty string unless both x and list are undefined.
func stringListMember(st *evalState, args []Expr, fold bool) Value {
	if len(args) < 2 || len(args) > 3 {
		return errorValue
	}
	x, l := args[0].eval(st), args[1].eval(st)
	delims := ", \t\r\n"
	if len(args) == 3 {
		d := args[2].eval(st)
		if d.kind == StringKind {
			delims = d.s
		} else if d.kind != UndefinedKind {
			return errorValue
		}
	}
	for _, v := range [2]Value{x, l} {
		if v.kind != StringKind && v.kind != UndefinedKind {
			return errorValue
		}
	}
	if x.kind == UndefinedKind && l.kind == UndefinedKind {
		return undefinedValue
	}
	list := l.s
	for list != "" {
		i := strings.IndexAny(list, delims)
		item := list
		if i < 0 {
			list = ""
		} else {
			item, list = list[:i], list[i+1:]
		}
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if item == x.s || fold && compareFold(item, x.s) == 0 {
			return trueValue
		}
	}
	return falseValue
}

// regexCache keeps compiled patterns; it is emptied when full.
var regexCache = struct {
	sync.Mutex
	m map[string]*regexp.Regexp
}{m: map[string]*regexp.Regexp{}}

const regexCacheSize = 512

func compileRegex(pattern, options string) (*regexp.Regexp, error) {
	var flags [3]bool // i, m, s
	for _, c := range options {
		switch c {
		case 'i', 'I':
			flags[0] = true
		case 'm', 'M':
			flags[1] = true
		case 's', 'S':
			flags[2] = true
		}
	}
	prefix := ""
	for i, f := range flags {
		if f {
			prefix += string("ims"[i])
		}
	}
	src := pattern
	if prefix != "" {
		src = "(?" + prefix + ")" + pattern
	}
	regexCache.Lock()
	re, ok := regexCache.m[src]
	regexCache.Unlock()
	if ok {
		return re, nil
	}
	re, err := regexp.Compile(src)
	if err != nil {
		return nil, err
	}
	regexCache.Lock()
	if len(regexCache.m) >= regexCacheSize {
		regexCache.m = map[string]*regexp.Regexp{}
	}
	regexCache.m[src] = re
	regexCache.Unlock()
	return re, nil
}

// fnRegexp: regexp(pattern, target [, options]) is true when pattern matches
// anywhere in target. Options: i (ignore case), m (multi-line), s (dot
// matches newline); others are ignored. Patterns use Go's RE2 syntax, a
// subset of PCRE: back-references and look-around are invalid and give error.
func fnRegexp(st *evalState, args []Expr) Value {
	if len(args) != 2 && len(args) != 3 {
		return errorValue
	}
	vs := make([]Value, 0, 3)
	for _, a := range args {
		vs = append(vs, a.eval(st))
	}
	for _, v := range vs {
		if v.kind == ErrorKind {
			return errorValue
		}
	}
	for _, v := range vs {
		if v.kind == UndefinedKind {
			return undefinedValue
		}
	}
	for _, v := range vs {
		if v.kind != StringKind {
			return errorValue
		}
	}
	opts := ""
	if len(vs) == 3 {
		opts = vs[2].s
	}
	re, err := compileRegex(vs[0].s, opts)
	if err != nil {
		return errorValue
	}
	return BoolValue(re.MatchString(vs[1].s))
}

// fnSize: size(x) is the length of a string (in bytes), a list or an ad.
func fnSize(st *evalState, args []Expr) Value {
	if len(args) != 1 {
		return errorValue
	}
	v := args[0].eval(st)
	switch v.kind {
	case UndefinedKind:
		return undefinedValue
	case StringKind:
		return IntValue(int64(len(v.s)))
	case ListKind:
		return IntValue(int64(len(v.ref.list)))
	case AdKind:
		return IntValue(int64(v.ref.ad.Len()))
	}
	return errorValue
}

// toText converts a value to a string as string() does: numbers and
// booleans in ClassAd syntax, lists and ads unparsed; undefined and error
// stay as they are.
func toText(v Value) Value {
	switch v.kind {
	case StringKind, UndefinedKind, ErrorKind:
		return v
	case IntKind:
		return StringValue(strconv.FormatInt(v.i, 10))
	}
	return StringValue(v.String())
}

// fnStrcat concatenates its arguments converted to strings; an undefined
// argument gives undefined and an error argument error (as HTCondor does).
func fnStrcat(st *evalState, args []Expr) Value {
	var b strings.Builder
	for _, a := range args {
		v := toText(a.eval(st))
		if v.kind != StringKind {
			return v
		}
		b.WriteString(v.s)
	}
	return StringValue(b.String())
}

func fnString(st *evalState, args []Expr) Value {
	if len(args) != 1 {
		return errorValue
	}
	v := toText(args[0].eval(st))
	if v.kind == UndefinedKind {
		return errorValue
	}
	return v
}

// fnSubstr: substr(s, offset [, length]) with Perl-like negative offsets
// and lengths; parts outside the string are dropped.
func fnSubstr(st *evalState, args []Expr) Value {
	if len(args) != 2 && len(args) != 3 {
		return errorValue
	}
	vs := make([]Value, len(args))
	for i, a := range args {
		vs[i] = a.eval(st)
	}
	for _, v := range vs {
		if v.kind == UndefinedKind {
			return undefinedValue
		}
	}
	if vs[0].kind != StringKind || vs[1].kind != IntKind || len(vs) == 3 && vs[2].kind != IntKind {
		return errorValue
	}
	s := vs[0].s
	n := int64(len(s))
	off := vs[1].i
	switch {
	case off < 0:
		off = max(n+off, 0)
	case off > n:
		off = n
	}
	length := n - off
	if len(vs) == 3 {
		switch l := vs[2].i; {
		case l < 0:
			length = max(n-off+l, 0)
		case l < length:
			length = l
		}
	}
	return StringValue(s[off : off+length])
}

// strcmpFn: strcmp(a, b) (stricmp: ignoring case) is -1, 0 or 1 after
// converting both to strings; undefined gives undefined.
func strcmpFn(st *evalState, args []Expr, fold bool) Value {
	if len(args) != 2 {
		return errorValue
	}
	a, b := args[0].eval(st), args[1].eval(st)
	if a.kind == UndefinedKind || b.kind == UndefinedKind {
		return undefinedValue
	}
	a, b = toText(a), toText(b)
	if a.kind != StringKind || b.kind != StringKind {
		return errorValue
	}
	if fold {
		return IntValue(int64(compareFold(a.s, b.s)))
	}
	return IntValue(int64(strings.Compare(a.s, b.s)))
}

// changeCase: toLower(x)/toUpper(x) on x converted to a string (ASCII
// letters only, like C); undefined gives undefined.
func changeCase(st *evalState, args []Expr, upper bool) Value {
	if len(args) != 1 {
		return errorValue
	}
	v := toText(args[0].eval(st))
	if v.kind != StringKind {
		return v
	}
	b := []byte(v.s)
	for i, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
	}
	return StringValue(string(b))
}

// toNumber converts for int() and real(): numbers stay, booleans are 0/1,
// strings are parsed (the whole string must be a number); anything else,
// including undefined, is error as the HTCondor manual says.
func toNumber(v Value) Value {
	switch v.kind {
	case IntKind, RealKind:
		return v
	case BoolKind:
		return IntValue(v.i)
	case StringKind:
		s := strings.TrimSpace(v.s)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return IntValue(i)
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return RealValue(f)
		}
	}
	return errorValue
}

// realToInt truncates f toward zero; NaN and values out of range are error.
func realToInt(f float64) Value {
	if math.IsNaN(f) || f >= 1<<63 || f < -(1<<63) {
		return errorValue
	}
	return IntValue(int64(f))
}

func fnInt(st *evalState, args []Expr) Value {
	if len(args) != 1 {
		return errorValue
	}
	v := toNumber(args[0].eval(st))
	if v.kind == RealKind {
		return realToInt(v.float())
	}
	return v
}

func fnReal(st *evalState, args []Expr) Value {
	if len(args) != 1 {
		return errorValue
	}
	v := args[0].eval(st)
	if v.kind == StringKind {
		switch strings.ToLower(strings.TrimSpace(v.s)) {
		case "inf", "+inf", "infinity":
			return RealValue(math.Inf(1))
		case "-inf", "-infinity":
			return RealValue(math.Inf(-1))
		case "nan":
			return RealValue(math.NaN())
		}
	}
	v = toNumber(v)
	if v.kind == IntKind {
		return RealValue(float64(v.i))
	}
	return v
}

// round implements floor(), ceiling() and round() (half to even): integers
// stay, anything else goes through real() and comes back as an integer.
func round(st *evalState, args []Expr, f func(float64) float64) Value {
	if len(args) != 1 {
		return errorValue
	}
	v := args[0].eval(st)
	if v.kind == IntKind {
		return v
	}
	v = toNumber(v)
	switch v.kind {
	case IntKind:
		return v
	case RealKind:
		return realToInt(f(v.float()))
	}
	return errorValue
}

// minMax: min(list)/max(list) over the numbers of a list, skipping undefined
// elements; a real result if any element is real. An empty list gives
// undefined, a non-number element error. HTCondor takes exactly one list
// argument: min(3, 1, 2) is error.
func minMax(st *evalState, args []Expr, isMin bool) Value {
	if len(args) != 1 {
		return errorValue
	}
	l := args[0].eval(st)
	if l.kind == UndefinedKind {
		return undefinedValue
	}
	if l.kind != ListKind {
		return errorValue
	}
	best := undefinedValue
	anyReal := false
	for _, e := range l.ref.list {
		switch e.kind {
		case UndefinedKind:
			continue
		case IntKind:
		case RealKind:
			anyReal = true
		default:
			return errorValue
		}
		if best.kind == UndefinedKind {
			best = e
			continue
		}
		c := compare(opLt, e, best)
		if !isMin {
			c = compare(opGt, e, best)
		}
		if c.IsTrue() {
			best = e
		}
	}
	if anyReal && best.kind == IntKind {
		return RealValue(float64(best.i))
	}
	return best
}

// fnTime: time() is the current Unix time in seconds, from Env.Now.
func fnTime(st *evalState, args []Expr) Value {
	if len(args) != 0 {
		return errorValue
	}
	return IntValue(st.env.now().Unix())
}

// fnDebug: debug(x) returns x and hands it to Env.Debug.
func fnDebug(st *evalState, args []Expr) Value {
	if len(args) != 1 {
		return errorValue
	}
	v := args[0].eval(st)
	if st.env.Debug != nil {
		st.env.Debug(args[0], v)
	}
	return v
}
