#!/bin/bash
# Full benchmark matrix. Usage: bash run.sh > results.txt 2>&1
set -u
cd "$(dirname "$0")"
go build -o kvbench . || exit 1
D=${DUR:-5s}
declare -A CFG=(
  [bolt-update]="-engine bolt -update"
  [bolt-10ms]="-engine bolt -delay 10ms"
  [bolt-2ms]="-engine bolt -delay 2ms"
  [bolt-500us]="-engine bolt -delay 500us"
  [bolt-2ms-tuned]="-engine bolt -delay 2ms -nofreelistsync -hashmap"
  [bolt-500us-tuned]="-engine bolt -delay 500us -nofreelistsync -hashmap"
  [pebble]="-engine pebble"
)
ORDER="bolt-update bolt-10ms bolt-2ms bolt-500us bolt-2ms-tuned bolt-500us-tuned pebble"
for rep in 1 2; do
  for c in $ORDER; do
    for n in 1 16 64 256; do
      ./kvbench ${CFG[$c]} -label "$c#$rep" -conc $n -dur $D
    done
    ./kvbench ${CFG[$c]} -label "$c#$rep" -conc 16 -recips 100 -dur $D
    ./kvbench ${CFG[$c]} -label "$c#$rep" -conc 16 -recips 1000 -dur $D
  done
done
for rep in 1 2; do
  ./kvbench -engine bolt   -mode read -label "bolt#$rep"
  ./kvbench -engine pebble -mode read -label "pebble#$rep"
done
