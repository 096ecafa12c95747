#!/usr/bin/env bash
# Run deploy/several-instances.yaml end to end: two instances behind nginx, one bucket. The first
# dataset goes in through nginx in 20-line requests (round-robin over both instances); then
# instance 1 is stopped (SIGTERM: it commits its open window and uploads it) and the second dataset
# goes in through nginx to instance 2 alone; then everything stops. The bucket must hold every
# event of both datasets exactly once (the reference's rows, tests/golden/seed-datasets), and both
# instances must have uploaded windows. Where the nginx and MinIO images cannot be pulled, local
# stand-ins take their place (deploy/stand-ins/compose.yaml). Needs a Docker engine with a bridge
# network and docker-compose (or `docker compose`); not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v docker-compose >/dev/null; then compose=(docker-compose); else compose=(docker compose); fi
compose+=(-p bea-instances-check -f deploy/several-instances.yaml)
if ! docker pull -q nginx:1.27 >/dev/null 2>&1; then
    echo "nginx:1.27 cannot be pulled: nginx and MinIO are replaced by the stand-ins in deploy/stand-ins"
    compose+=(-f deploy/stand-ins/compose.yaml)
fi
cleanup() { "${compose[@]}" down -v >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
"${compose[@]}" up -d --build --quiet-pull 2>/dev/null || "${compose[@]}" up -d --build >/dev/null
for _ in $(seq 150); do curl -sf http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.2; done
send() {  # send FILE through nginx, from a container on the compose network
    "${compose[@]}" run --rm --no-deps -v "$PWD/examples:/examples:ro" --entrypoint batched-event-api \
        ingest-1 send --url http://nginx:8080 --batch-lines 20 --no-progress "/examples/$1"
}
send initial-dataset-01.ndjson
"${compose[@]}" stop ingest-1 >/dev/null  # SIGTERM: commit the open window, upload what is left
send initial-dataset-02.ndjson
"${compose[@]}" stop ingest-2 nginx >/dev/null
for instance in ingest-1 ingest-2; do
    uploads=$("${compose[@]}" logs --no-color "$instance" | grep -c '"message": "uploaded ' || true)
    echo "$instance uploaded $uploads windows"
    [ "$uploads" -ge 1 ] || { echo "$instance uploaded nothing: the load did not reach both instances"; exit 1; }
done
# What the bucket holds, against the reference's rows, from a container with the instances' settings.
"${compose[@]}" run --rm --no-deps -v "$PWD/tests/golden/seed-datasets:/expected:ro" --entrypoint python ingest-1 -c '
import glob, os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
bucket, prefix = os.environ["BEA_OUTPUT"][len("s3://"):].split("/", 1)
names = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
         for o in page.get("Contents", [])]
rows = sorted(line for name in names for line in s3.get_object(Bucket=bucket, Key=name)["Body"].read().splitlines())
expected = sorted(line for path in glob.glob("/expected/*.csv") for line in open(path, "rb").read().splitlines())
print(f"{len(names)} objects under s3://{bucket}/{prefix}: " + ", ".join(n[len(prefix):] for n in sorted(names)))
if rows != expected:
    sys.exit(f"the bucket holds {len(rows)} rows, not the reference'"'"'s {len(expected)} exactly once")
print(f"every one of the {len(expected)} events exactly once")
'
echo "several-instances check passed"
