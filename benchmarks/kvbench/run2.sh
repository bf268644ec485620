#!/bin/bash
# Interleaved re-run (engines alternate at each step so disk drift hits all equally),
# with raw fdatasync probes, plus bolt own-group-commit and pebble read with bloom/settle.
# Usage: REP=3 bash run2.sh >> results2.txt 2>&1
set -u
cd "$(dirname "$0")"
go build -o kvbench . || exit 1
D=${DUR:-5s}; R=${REP:-3}
declare -A CFG=(
  [pebble]="-engine pebble"
  [bolt-groupcommit]="-engine bolt -groupcommit"
  [bolt-10ms]="-engine bolt -delay 10ms"
  [bolt-2ms-tuned]="-engine bolt -delay 2ms -nofreelistsync -hashmap"
)
ORDER="pebble bolt-groupcommit bolt-10ms bolt-2ms-tuned"
for n in 1 16 64 256; do
  ./kvbench -mode fsyncprobe -label "before-conc$n#$R"
  for c in $ORDER; do ./kvbench ${CFG[$c]} -label "$c#$R" -conc $n -dur $D; done
done
./kvbench -mode fsyncprobe -label "before-1000r#$R"
for c in $ORDER; do ./kvbench ${CFG[$c]} -label "$c#$R" -conc 16 -recips 1000 -dur $D; done
./kvbench -mode fsyncprobe -label "after#$R"
./kvbench -engine pebble -mode read -label "pebble-bloom-settled#$R"
./kvbench -engine pebble -mode read -pbloom=false -label "pebble-nobloom-settled#$R"
