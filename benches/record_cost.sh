#!/bin/sh
# Instructions per `record` of each kernel family (callgrind, counting only the record call:
# examples/record_cost.rs). Instruction counts are repeatable on a loaded machine, unlike wall
# clock. Usage: benches/record_cost.sh [records per family, default 200] [families...]
set -eu
n=${1:-200}
[ $# -gt 0 ] && shift
families=${*:-random forward backward density sample tokens tokens-split speculative}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --example record_cost
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# instr/record: the record call alone; instr/step: a new encoder, the record, finish and the
# command buffer's drop (where uncached bind groups and uniform buffers are freed).
printf '%-12s %14s %14s\n' family 'instr/record' 'instr/step'
count() { # family, function, extra environment
    env $3 valgrind --tool=callgrind --toggle-collect="record_cost::$2" \
        --callgrind-out-file="$out/$1.$2" "$target/release/examples/record_cost" "$1" "$n" \
        > "$out/$1.log" 2>&1 || { cat "$out/$1.log"; exit 1; }
    grep '^summary:' "$out/$1.$2" | awk '{print $2}'
}
for f in $families; do
    record=$(count "$f" measured_record "")
    step=$(count "$f" measured_step RECORD_COST_STEP=1)
    printf '%-12s %14d %14d\n' "$f" $((record / n)) $((step / (n + 20)))
done
