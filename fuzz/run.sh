#!/usr/bin/env bash
# Builds tern's fuzz targets and runs them with libFuzzer (see README.md).
#
#   fuzz/run.sh [--seconds N] [TARGET...] [-- LIBFUZZER_FLAG...]
#       Fuzzes each TARGET (default: all of them), one after the other, for
#       N seconds each (default: $FUZZ_SECONDS, else 30), starting from the
#       committed corpus. Exits non-zero if any target crashed (the input
#       is kept in fuzz/artifacts/TARGET/) or did not build.
#   fuzz/run.sh cmin [TARGET...]
#       Folds what earlier runs found (fuzz/target/corpus/TARGET) into the
#       committed corpus (fuzz/corpus/TARGET), minimized: the hand-written
#       seed-* inputs, and of the rest only what reaches code they miss.
#   fuzz/run.sh repro TARGET FILE...
#       Runs TARGET once on each FILE (a crash artifact) and shows what
#       happened.
#   fuzz/run.sh build | list
#
# Environment: FUZZ_SECONDS (seconds per target), FUZZ_TIMEOUT (seconds one
# input may take before it counts as a hang; default 10: libFuzzer measures
# wall-clock time, so on a busy machine, or with the fuzzer niced, raise it
# for long runs, or a starved input is reported as a timeout),
# FUZZ_TOOLCHAIN (a rustup toolchain; default nightly if installed, else
# the default one).
#
# The targets are plain libFuzzer binaries (libfuzzer-sys), built here with
# the instrumentation flags cargo-fuzz would pass, so neither cargo-fuzz nor
# a nightly toolchain is required: on a stable toolchain RUSTC_BOOTSTRAP=1
# lets it take the address sanitizer flag. One fuzzing process at a time
# (libFuzzer's default, no -jobs/-workers): the machine is shared.
set -euo pipefail

start=$PWD
cd "$(dirname "$0")"

all_targets=(framer line_protocol nats_decoder metrics_request subject_index config_file leaf_wire)

# libFuzzer flags per target: the longest input worth trying (past the
# limits each parser enforces: 256-byte subjects, 4 KiB NATS control lines,
# 8 KiB request heads) and a dictionary of the protocol's words.
target_flags() {
    case $1 in
        framer) echo "-max_len=4096" ;;
        line_protocol) echo "-max_len=1024 -dict=dict/line_protocol.dict" ;;
        nats_decoder) echo "-max_len=10240 -dict=dict/nats_decoder.dict" ;;
        metrics_request) echo "-max_len=9000 -dict=dict/metrics_request.dict" ;;
        subject_index) echo "-max_len=2048" ;;
        config_file) echo "-max_len=4096 -dict=dict/config_file.dict" ;;
        leaf_wire) echo "-max_len=10240 -dict=dict/leaf_wire.dict" ;;
        *) return 1 ;;
    esac
}

die() {
    echo "fuzz/run.sh: $*" >&2
    exit 2
}

# --- toolchain -----------------------------------------------------------

toolchain=()
if command -v rustup >/dev/null 2>&1; then
    if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
        toolchain=("+$FUZZ_TOOLCHAIN")
    elif rustup run nightly rustc --version >/dev/null 2>&1; then
        toolchain=(+nightly)
    fi
fi
rustc_info=$(rustc "${toolchain[@]}" -vV)
# Let a stable compiler take the nightly-only sanitizer flag.
case $rustc_info in
    *release:*nightly*) ;;
    *) export RUSTC_BOOTSTRAP=1 ;;
esac
triple=$(sed -n 's/^host: //p' <<<"$rustc_info")
bin_dir=${CARGO_TARGET_DIR:-target}/$triple/release

build() {
    # cargo-fuzz's flags: edge coverage with inline 8-bit counters, the
    # PC table, comparison tracing (libFuzzer learns the magic values),
    # stack depth, no branch folding; and the address sanitizer, since
    # tern's framer and the `bytes` crate use `unsafe`. --target keeps
    # these flags off build scripts and proc macros.
    local flags=(
        -Cpasses=sancov-module
        -Cllvm-args=-sanitizer-coverage-level=4
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
        -Cllvm-args=-sanitizer-coverage-pc-table
        -Cllvm-args=-sanitizer-coverage-trace-compares
        -Cllvm-args=-sanitizer-coverage-stack-depth
        -Cllvm-args=-simplifycfg-branch-fold-threshold=0
        --cfg fuzzing
        -Zsanitizer=address
    )
    echo "== fuzz: building the targets ($(rustc "${toolchain[@]}" --version)${RUSTC_BOOTSTRAP:+, RUSTC_BOOTSTRAP=1})"
    RUSTFLAGS="${flags[*]} ${RUSTFLAGS:-}" cargo "${toolchain[@]}" build \
        --manifest-path Cargo.toml --locked --release --target "$triple" --bins
}

check_targets() {
    local t
    for t in "$@"; do
        target_flags "$t" >/dev/null || die "unknown target $t (targets: ${all_targets[*]})"
    done
}

# ASan as cargo-fuzz sets it; leak detection off (a fuzz target that
# returns leaks nothing tern would keep).
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0:detect_leaks=0

# The last `cov:` line of a libFuzzer log, and its final statistics, in
# one line.
summary() {
    local log=$1
    local runs secs rate cov ft corp
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    echo "${secs:-?} s, ${runs:-?} runs (${rate:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
}

fuzz() {
    local seconds=$1
    shift
    local targets=("$@")
    local failed=()
    local t
    for t in "${targets[@]}"; do
        local found=target/corpus/$t committed=corpus/$t artifacts=artifacts/$t
        local log=target/logs/$t.log
        mkdir -p "$found" "$committed" "$artifacts" target/logs
        echo "== fuzz: $t for $seconds s (log: fuzz/$log)"
        # shellcheck disable=SC2046 # the flags are words
        # Flags given after `--` come last, so they win.
        if "$bin_dir/$t" -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$artifacts/" \
            $(target_flags "$t") "${extra[@]}" "$found" "$committed" >"$log" 2>&1; then
            echo "   ok: $(summary "$log")"
        else
            echo "   FAILED: $t crashed (or libFuzzer stopped); from its log:"
            # The panic message or the sanitizer's report, and the input.
            grep -E -A4 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" |
                grep -v -E '^ *(stack backtrace|[0-9]+: |at |#[0-9]+ )' | head -n 20 | sed 's/^/   | /'
            grep -E '^(SUMMARY|Base64):' "$log" | sed 's/^/   | /'
            echo "   inputs kept: $(ls "$artifacts" | sed "s|^|fuzz/$artifacts/|" | tr '\n' ' ')"
            echo "   reproduce: fuzz/run.sh repro $t fuzz/$artifacts/<file>"
            failed+=("$t")
        fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
        return 1
    fi
    echo "fuzz: ${#targets[@]} of ${#targets[@]} targets ran $seconds s each without a crash"
}

cmin() {
    local t
    for t in "$@"; do
        local committed=corpus/$t found=target/corpus/$t merged=target/cmin/$t
        mkdir -p "$committed" "$found"
        rm -rf "$merged"
        mkdir -p "$merged"
        # The hand-written seeds stay, under their names; merging adds
        # only what covers something more.
        find "$committed" -maxdepth 1 -name 'seed-*' -exec cp {} "$merged/" \;
        echo "== fuzz: minimizing the corpus of $t"
        # shellcheck disable=SC2046
        # Edges only (no hit-count buckets): a few hundred inputs per
        # target instead of thousands, each reaching code the others miss.
        "$bin_dir/$t" $(target_flags "$t") -merge=1 -use_counters=0 -timeout=10 \
            "$merged" "$committed" "$found" >"target/cmin/$t.log" 2>&1 ||
            { tail -n 20 "target/cmin/$t.log"; die "merge of $t failed"; }
        local before after
        before=$(ls "$committed" | wc -l)
        rm -rf "$committed"
        mv "$merged" "$committed"
        after=$(ls "$committed" | wc -l)
        echo "   fuzz/corpus/$t: $before -> $after inputs ($(du -sh "$committed" | cut -f1))"
    done
}

repro() {
    local t=$1
    shift
    check_targets "$t"
    local f status=0
    for f in "$@"; do
        case $f in /*) ;; *) f=$start/$f ;; esac
        # shellcheck disable=SC2046
        "$bin_dir/$t" $(target_flags "$t") "$f" || status=$?
    done
    return "$status"
}

# --- command line ----------------------------------------------------------

command=fuzz
case ${1:-} in
    cmin | repro | build | list)
        command=$1
        shift
        ;;
esac

seconds=${FUZZ_SECONDS:-30}
targets=()
extra=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds)
            [ $# -ge 2 ] || die "--seconds needs a number"
            seconds=$2
            shift 2
            ;;
        --seconds=*)
            seconds=${1#--seconds=}
            shift
            ;;
        --)
            shift
            extra=("$@")
            break
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            targets+=("$1")
            shift
            ;;
    esac
done
case $seconds in
    '' | *[!0-9]*) die "seconds must be a whole number, not '$seconds'" ;;
esac

case $command in
    list)
        printf '%s\n' "${all_targets[@]}"
        ;;
    build)
        build
        ;;
    repro)
        [ ${#targets[@]} -ge 2 ] || die "usage: fuzz/run.sh repro TARGET FILE..."
        build
        repro "${targets[@]}"
        ;;
    cmin)
        [ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
        check_targets "${targets[@]}"
        build
        cmin "${targets[@]}"
        ;;
    fuzz)
        [ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
        check_targets "${targets[@]}"
        build
        fuzz "$seconds" "${targets[@]}"
        ;;
esac
