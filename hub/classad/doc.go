// Package classad parses and evaluates HTCondor ClassAd expressions, so that
// the hub can decide which VM flavor a queued job would match without asking
// HTCondor (no Go ClassAd library can be had from the module proxy).
//
// # What is supported
//
// The subset that real Requirements, Rank, START and WithinResourceLimits
// expressions use, in the new-ClassAd syntax that condor_q and condor_status
// print with -long and -json:
//
//   - literals: integers, reals (1.5, .5, 2., 1e3, 1E-07), strings with
//     backslash escapes (\n \t \" \\ octal \101 ...), true, false, undefined
//     and error in any case;
//   - attribute references Name, MY.Name, TARGET.Name and 'quoted name',
//     all case-insensitive;
//   - operators by precedence: ?: and the Elvis a ?: b; ||; &&; |; ^; &;
//     == != =?= =!= is isnt; < <= > >=; << >> >>>; + -; * / %; unary ! - + ~;
//     then .name, [index] and calls f(x, ...); parentheses; lists {a, b};
//     nested ads [a = 1; b = a + 1]; // and /* */ comments;
//   - functions: ifThenElse, isUndefined, isError, isString, isInteger,
//     isReal, isBoolean, isList, isClassAd, member, identicalMember,
//     stringListMember, stringListIMember, regexp, size, strcat, substr,
//     strcmp, stricmp, toLower, toUpper, string, int, real, floor, ceiling
//     (ceil), round, min, max, time, debug. Any other function evaluates to
//     error. Absolute and relative time values are not supported.
//
// # Semantics followed
//
// Evaluation follows the HTCondor ClassAd reference manual and, where the
// manual is silent or out of date, libclassad of HTCondor 24 (the recorded
// golden vectors in testdata/ come from HTCondor 24.0.23 itself):
//
//   - missing attributes are undefined; strict operators (arithmetic,
//     comparisons, bitwise, unary) give error if an operand is error,
//     otherwise undefined if an operand is undefined;
//   - && and || are not strict: false && x is false and true || x is true
//     without evaluating x; undefined && true is undefined; undefined &&
//     false is false; a string operand is error; numbers act as booleans;
//   - == != < ... compare strings case-insensitively and only with strings
//     (a string against a number is error); integers are promoted to reals
//     and booleans to 0/1; =?= and =!= (is, isnt) compare type and value,
//     strings case-sensitively, and are never undefined;
//   - integer division truncates toward zero like C; division or modulus by
//     zero is error, and so is a real modulus (as in HTCondor);
//   - ifThenElse and ?: are lazy; a ?: b gives b only when a is undefined;
//   - scopes for matchmaking: MY.x is the ad being evaluated, TARGET.x the
//     other ad, and an unscoped x is looked up in the ad itself (and the
//     enclosing ads of a nested ad), then in the other ad, then CurrentTime
//     is the clock, else undefined. An attribute is evaluated in the scope of
//     the ad that holds it, where MY and TARGET swap. A reference cycle
//     (A = A + 1) is error, and evaluation stops with error past 200 nested
//     references or 2^20 references in all;
//   - Match is two-sided, like HTCondor's matchmaker: the job's Requirements
//     with the machine as TARGET and the machine's Requirements (or START)
//     with the job as TARGET must both be true (or a non-zero number);
//     undefined and error mean no match.
//
// regexp uses Go's RE2 syntax, which is PCRE without back-references and
// look-around (those patterns give error); the options i, m and s are
// honoured.
//
// # Use
//
// Parse once, evaluate many times: Exprs and Ads are safe for concurrent
// evaluation, and evaluation does not allocate for the usual expressions.
//
//	jobs, err := classad.ParseJSON(condorQOutput) // condor_q -json
//	flavor := classad.NewAd()
//	flavor.SetValue("Cpus", classad.IntValue(4))
//	flavor.SetValue("Memory", classad.IntValue(8192))
//	...
//	if classad.Match(jobs[0], flavor) { ... }
//
// ParseLong reads the -long format, and Env supplies the clock for time()
// and a hook for debug().
package classad
