#!/usr/bin/env bash
# Submits N ddb2pg workers as one AWS Batch array job (see deploy/README.md). The image
# must hold pipeline.toml at /etc/ddb2pg/ (a `COPY pipeline.toml /etc/ddb2pg/` layer on top
# of deploy/Dockerfile), or mount it (EFS) in the job definition.
#   bash deploy/aws-batch/submit.sh QUEUE [WORKERS]
set -euo pipefail
queue=${1:?usage: submit.sh QUEUE [WORKERS]}
workers=${2:-4}
cd "$(dirname "$0")"
aws batch register-job-definition --cli-input-json file://job-definition.json >/dev/null
# Every child runs the same command; AWS_BATCH_JOB_ARRAY_INDEX is not needed (splits are
# claimed in the target database). A failed child is retried (retryStrategy) and resumes.
aws batch submit-job \
  --job-name "ddb2pg-load-$(date +%Y%m%d-%H%M%S)" \
  --job-queue "$queue" \
  --job-definition ddb2pg-load \
  --array-properties "size=$workers"
