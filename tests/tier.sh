#!/bin/sh
# One test tier of `make test`: run the command with its output in LOG, print the log whole
# when it ends (tiers run side by side; their lines must not interleave), exit as it exited.
set -u
log=$1
shift
echo "make: $* (output in $log)"
"$@" >"$log" 2>&1
status=$?
cat "$log"
exit $status
