#!/usr/bin/env bash
# Build the image and check it end to end: the wheel carries the native pass (the build fails
# otherwise), the container answers on a non-default BEA_PORT and its health check follows it, a
# named volume is writable by the image's user, and `docker stop` commits the open window.
# Host networking only, so it also runs where Docker has no bridge network.
set -euo pipefail
cd "$(dirname "$0")/.."
image=batched-event-api:check name=bea-check volume=bea-check-data port=18080
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; docker volume rm -f "$volume" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
docker build --network host -t "$image" . >/dev/null
docker volume create "$volume" >/dev/null
docker run -d --name "$name" --network host -e BEA_PORT=$port -v "$volume":/data "$image" >/dev/null
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
answer=$(curl -sf -X POST --data-binary @examples/initial-dataset-01.ndjson "http://127.0.0.1:$port/user/event")
[ "$answer" = '{"accepted":400}' ] || { echo "unexpected answer: $answer"; exit 1; }
for _ in $(seq 60); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$name")
    [ "$health" = healthy ] && break
    sleep 1
done
[ "$health" = healthy ] || { echo "the health check says $health"; exit 1; }
docker stop "$name" >/dev/null  # SIGTERM: the open window is committed
files=$(docker run --rm -v "$volume":/data --entrypoint sh "$image" -c 'ls /data/*.csv | wc -l; cat /data/*.csv | wc -l')
[ "$files" = "$(printf '2\n400')" ] || { echo "expected 2 files with 400 rows in the volume, got: $files"; exit 1; }
echo "docker check passed: built, healthy on BEA_PORT=$port, 400 rows in 2 committed files in a named volume after docker stop"
