#!/usr/bin/env bash
# Submits the ring-async service as a Ray job on a running cluster (deploy/ray/cluster.yaml; docs/operations.md).
#   RAY_ADDRESS=http://HEAD:8265 deploy/ray/submit.sh
# The entrypoint runs on the head: the broker and Control are placed on the driver's node, so Control is at
# HEAD:${CONTROL_PORT} and every role's /metrics is listed at http://HEAD:${METRICS_PORT}/targets.
# The Control token is read on the head from ~/ring-async/control-token (create it there, mode 600): it never
# appears in the job's command line or runtime environment, which the Ray dashboard shows.
set -euo pipefail
: "${RAY_ADDRESS:?set RAY_ADDRESS to the dashboard of the head, e.g. http://10.0.0.5:8265}"
CONTROL_PORT=${CONTROL_PORT:-50050}
METRICS_PORT=${METRICS_PORT:-9400}
GENERATORS=${GENERATORS:-4}
SUBMISSION_ID=${SUBMISSION_ID:-ring-async-service}
# RAY_JOB_STOP_WAIT_TIME_S: Ray kills a stopped job 3 s after SIGTERM by default; the final checkpoint may need
# minutes (the launcher waits up to 600 s for it).
exec ray job submit --address "$RAY_ADDRESS" --submission-id "$SUBMISSION_ID" --no-wait \
  --runtime-env-json '{"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "900"}}' -- \
  bash -c "RING_ASYNC_CONTROL_TOKEN=\$(cat ~/ring-async/control-token) exec ring-async serve --address auto \
    --config ~/ring-async/service.yaml --generators $GENERATORS --control-port $CONTROL_PORT \
    --metrics-port $METRICS_PORT --quiet"
