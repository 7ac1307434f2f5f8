#!/bin/sh
# Entry point of the portal image (web, worker, beat). prometheus_client's multiprocess files are
# named by process id, and ids repeat across containers, so each container writes into its own
# subdirectory of the shared K2_METRICS_DIR volume, emptied at start (a restarted container's old
# files would be summed in); the portal's /metrics merges every subdirectory.
set -eu
if [ -n "${K2_METRICS_DIR:-}" ]; then
  PROMETHEUS_MULTIPROC_DIR="${K2_METRICS_DIR}/$(hostname)"
  export PROMETHEUS_MULTIPROC_DIR
  rm -rf "$PROMETHEUS_MULTIPROC_DIR"
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
exec "$@"
