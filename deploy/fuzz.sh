#!/usr/bin/env bash
# Runs every fuzz target in the repository, one after the other, each for
# FUZZTIME, goes on past failures, prints a summary table and exits non-zero
# if any target failed. `make fuzz` calls it.
#
# Environment:
#   FUZZTIME      how long each target runs (go test -fuzztime), default 60s
#   FUZZMINIMIZETIME  how long a new or failing input is minimized
#                 (go test -fuzzminimizetime), default 3s: go's 60s default
#                 would spend a short run minimizing one large seed input
#   FUZZ_MATCH    only targets whose name matches this extended regex
#   FUZZ_PARALLEL fuzzing workers per target (go test -parallel); default: GOMAXPROCS
#   FUZZ_LOGDIR   where each target's output is kept; default: a temporary directory
#   GO            the go command, default go
#
# A failing input is written by go test to the package's
# testdata/fuzz/<Target>/ directory: fix the bug, keep the file (it becomes
# a regression test run by plain `go test`), and run again.
set -uo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-3s}
FUZZ_MATCH=${FUZZ_MATCH:-.}
logdir=${FUZZ_LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/canopy-fuzz.XXXXXX")}
mkdir -p "$logdir"

# Discover: `go test -list` prints a package's matching names, then its
# "ok <package>" line.
targets=()
names=()
if ! listing=$("$GO" test -list '^Fuzz' ./... 2>"$logdir/list.err"); then
	echo "fuzz: listing the fuzz targets failed:" >&2
	cat "$logdir/list.err" >&2
	exit 2
fi
while read -r first second _; do
	case "$first" in
	Fuzz*) names+=("$first") ;;
	ok)
		for n in "${names[@]}"; do
			if [[ "$n" =~ $FUZZ_MATCH ]]; then
				targets+=("$second $n")
			fi
		done
		names=()
		;;
	esac
done <<<"$listing"
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz target matches '$FUZZ_MATCH'" >&2
	exit 2
fi

parallel=()
if [ -n "${FUZZ_PARALLEL:-}" ]; then
	parallel=(-parallel "$FUZZ_PARALLEL")
fi

echo "fuzz: ${#targets[@]} targets, $FUZZTIME each; logs in $logdir"
rows=()
failed=0
i=0
for t in "${targets[@]}"; do
	pkg=${t% *}
	name=${t#* }
	i=$((i + 1))
	log="$logdir/$(echo "$pkg" | tr '/' '_')__$name.log"
	echo "fuzz: [$i/${#targets[@]}] $name ($pkg)"
	start=$(date +%s)
	"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" \
		"${parallel[@]}" "$pkg" >"$log" 2>&1
	rc=$?
	secs=$(($(date +%s) - start))
	# The last progress line has the totals:
	# fuzz: elapsed: 20s, execs: 123456 (6172/sec), new interesting: 3 (total: 12)
	last=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -n 1)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	newi=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
	if [ $rc -ne 0 ] && ! grep -q 'Failing input written' "$log" &&
		[ "$(grep -v '^\(FAIL\|exit status\|ok\)' "$log" | tail -n 1 | tr -d '[:space:]')" = "contextdeadlineexceeded" ]; then
		# Go before 1.27 may fail a target with a bare "context deadline
		# exceeded" when -fuzztime ends while a worker is busy
		# (golang/go#75804): no input is written and nothing failed.
		# Replay the corpus to be sure, and count it as passed.
		if "$GO" test -count=1 -run "^${name}\$" "$pkg" >>"$log" 2>&1; then
			rc=0
			note=" (go#75804 deadline race; corpus replayed)"
		fi
	fi
	if [ $rc -eq 0 ]; then
		result="ok${note:-}"
		note=
	else
		failed=$((failed + 1))
		input=$(sed -nE 's/.*Failing input written to (.*)$/\1/p' "$log" | tail -n 1)
		if [ -n "$input" ]; then
			input="${pkg#github.com/canopy-grid/canopy/}/$input"
		fi
		result="FAIL ${input:-(see $log)}"
	fi
	rows+=("$(printf '%-26s %-40s %12s %6s %5ss  %s' "$name" "${pkg#github.com/canopy-grid/canopy/}" "${execs:--}" "${newi:--}" "$secs" "$result")")
done

echo
printf '%-26s %-40s %12s %6s %6s  %s\n' TARGET PACKAGE EXECS NEW TIME RESULT
for r in "${rows[@]}"; do
	echo "$r"
done
echo
if [ $failed -gt 0 ]; then
	echo "fuzz: $failed of ${#targets[@]} targets failed (logs in $logdir)"
	exit 1
fi
echo "fuzz: all ${#targets[@]} targets passed"
