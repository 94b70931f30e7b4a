#!/bin/sh
# RUSTC_WRAPPER for fuzzing on a stable toolchain: libFuzzer's coverage instrumentation
# (SanitizerCoverage through stable -C flags, as cargo-fuzz passes it) for this crate and
# gumbel_wgpu only, so wgpu and naga build as usual. No sanitizer: -Zsanitizer needs nightly.
rustc="$1"
shift
case " $* " in
*" --crate-name gumbel_wgpu "* | *" --crate-name host_api "*)
    exec "$rustc" "$@" --cfg fuzzing -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        -Cdebug-assertions -Coverflow-checks ;;
*) exec "$rustc" "$@" ;;
esac
