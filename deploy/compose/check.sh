#!/usr/bin/env bash
# The README's compose flow, end to end, in real containers (`make compose-check`).
#
#   build the image; `compose up -d` on an empty workspace; the proxy answers 503 while nothing
#   is stored; `nexus store` from the host, as the host's user; a commit; /predict through the
#   proxy answers 200; a second version stored and rolled out; `compose down -v`.
#
# Docker (with Compose v2) where its daemon answers, podman with podman-compose otherwise.
# Where MinIO's image cannot be pulled, SeaweedFS stands in for it (deploy/compose/seaweedfs.yml),
# and where PyTorch's CPU index cannot be reached, the CPU torch wheel pip finds locally is
# put in deploy/docker/wheels/. Not part of `make test`: it needs an engine and minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$ROOT/.venv/bin/python}
NEXUS=${NEXUS:-$ROOT/.venv/bin/nexus}
PROJECT=${NEXUS_CHECK_PROJECT:-nexuscheck}
TIMEOUT_S=${NEXUS_CHECK_TIMEOUT_S:-300}

say() { printf '[check %s] %s\n' "$(date +%T)" "$*"; }
die() { say "FAILED: $*"; exit 1; }
now() { date +%s.%N; }

[ -x "$NEXUS" ] || die "no nexus CLI at $NEXUS: run 'make install' first (or set NEXUS=...)."

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=docker COMPOSE=(docker compose) BUILD=(docker build)
elif command -v podman >/dev/null && command -v podman-compose >/dev/null; then
  ENGINE=podman COMPOSE=(podman-compose) BUILD=(podman build --format docker --skip-unused-stages=false)
else
  die "neither a running Docker nor podman with podman-compose is here."
fi
say "engine: $ENGINE"

FILES=(-f docker-compose.yml)
if ! $ENGINE image inspect minio/minio:latest >/dev/null 2>&1 \
    && ! $ENGINE pull -q minio/minio:latest >/dev/null 2>&1; then
  say "MinIO's image cannot be pulled here: SeaweedFS (a real S3 server) stands in for it."
  FILES+=(-f deploy/compose/seaweedfs.yml)
  "${BUILD[@]}" -q -t nexusml-seaweedfs:latest deploy/compose/seaweedfs >/dev/null
fi

if ! ls deploy/docker/wheels/torch-*.whl >/dev/null 2>&1 \
    && ! curl -fsS -m 10 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
  say "PyTorch's CPU index cannot be reached: looking for a CPU torch wheel pip can find here."
  "$PY" -m pip download -q --no-deps --only-binary=:all: --dest deploy/docker/wheels torch
  ls deploy/docker/wheels/torch-*+cpu-*.whl >/dev/null 2>&1 \
    || die "no CPU build of torch here; the image would pull CUDA. Put one in deploy/docker/wheels/."
fi

say "building the image"
started=$(now)
"${BUILD[@]}" -q -t nexusml:latest . >/dev/null
say "image built in $(printf '%.0f' "$(echo "$(now) - $started" | bc)") s; size: $(
  $ENGINE image inspect nexusml:latest --format '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}')"

WS=$(mktemp -d /tmp/nexus-compose-XXXXXX)
chmod 755 "$WS"  # the image's user (uid 10001) reads the workspace the host's user writes
export NEXUS_WORKSPACE=$WS NEXUS_MODEL_NAME=my_model COMPOSE_PROJECT_NAME=$PROJECT
compose() { "${COMPOSE[@]}" -p "$PROJECT" "${FILES[@]}" "$@"; }
cleanup() {
  status=$?
  if [ "$status" != 0 ]; then
    say "logs of the stack:"
    compose logs --tail 40 2>&1 | tail -120 || true
  fi
  compose down -v >/dev/null 2>&1 || true
  rm -rf "$WS"
  exit "$status"
}
trap cleanup EXIT

git -C "$WS" init -q -b main
git -C "$WS" config user.name "Compose check"
git -C "$WS" config user.email check@nexusml.invalid
printf 'print("training")\n' > "$WS/train.py"
git -C "$WS" add train.py && git -C "$WS" commit -q -m "A new project"

say "compose up -d (an empty workspace)"
up_at=$(now)
compose up -d --no-build >/dev/null 2>&1 || compose up -d --no-build

# The host's side, as the README has it: the CLI run by this user against the store on :9000.
export NEXUS_PROVIDER=s3 NEXUS_BUCKET=${NEXUS_BUCKET:-models} NEXUS_REGION=us-east-1
export NEXUS_ENDPOINT_URL=http://127.0.0.1:9000
export AWS_ACCESS_KEY_ID=${MINIO_ROOT_USER:-nexus} AWS_SECRET_ACCESS_KEY=${MINIO_ROOT_PASSWORD:-nexus-secret}

predict() {  # status and body of one /predict through the proxy
  curl -s -m 30 -o /tmp/nexus-check-answer -w '%{http_code}' localhost:8080/predict \
    -H 'content-type: application/json' -d '{"input": [0.5, -1.0, 2.0, 0.0]}' || true
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + limit ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$what did not happen within $limit s."
    sleep 1
  done
}
answers() { [ "$(predict)" = "$1" ]; }
serves() { [ "$(predict)" = 200 ] && grep -q "\"commit_hash\":\"$1\"" /tmp/nexus-check-answer; }

bucket_made() {  # create-bucket has done its one job (it may finish after the proxy is up)
  "$PY" -c 'import os, sys, boto3
boto3.client("s3", endpoint_url=os.environ["NEXUS_ENDPOINT_URL"], region_name="us-east-1").head_bucket(Bucket=sys.argv[1])' "$NEXUS_BUCKET" >/dev/null 2>&1
}

wait_for "$TIMEOUT_S" "the proxy answering 503 (nothing stored yet)" answers 503
say "before any store the proxy answers 503: $(cat /tmp/nexus-check-answer)"
wait_for "$TIMEOUT_S" "the bucket made by create-bucket" bucket_made

store() {  # store a fresh model at a new commit; print the commit
  printf '# version %s\n' "$1" >> "$WS/train.py"
  git -C "$WS" commit -q -am "Train $1"
  "$PY" -c 'import sys, torch
torch.manual_seed(int(sys.argv[2]))
model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
torch.jit.script(model.eval()).save(sys.argv[1])' "$WS/../model-$PROJECT-$1.pt" "$1"
  (cd "$WS" && "$NEXUS" store --quiet "$WS/../model-$PROJECT-$1.pt" my_model >&2)
  rm -f "$WS/../model-$PROJECT-$1.pt"
  git -C "$WS" add -A && git -C "$WS" commit -q -m "Store my_model $1"
  git -C "$WS" rev-parse HEAD~1
}

first=$(store 1)
say "stored version 1 (commit ${first:0:7}) from the host as $(id -un); metadata mode $(stat -c %a "$WS/.nexus_meta.json")"
wait_for "$TIMEOUT_S" "version 1 served through the proxy" serves "$first"
served_at=$(now)
say "first 200 through the proxy: $(printf '%.1f' "$(echo "$served_at - $up_at" | bc)") s after 'up'"

second=$(store 2)
say "stored version 2 (commit ${second:0:7}); 16 callers send traffic while it is canaried and rolled out"
"$PY" - "$second" "$TIMEOUT_S" <<'PYTHON'
import asyncio, collections, sys, time
import httpx

async def main(second: str, limit_s: float) -> None:
    statuses: collections.Counter[int] = collections.Counter()
    versions: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    done = asyncio.Event()
    streak = 0  # answers by version 2 in a row: while on trial it answers a tenth of batches

    async def caller(client: httpx.AsyncClient) -> None:
        nonlocal streak
        while not done.is_set() and time.monotonic() - started < limit_s:
            reply = await client.post("/predict", json={"input": [0.5, -1.0, 2.0, 0.0]})
            statuses[reply.status_code] += 1
            if reply.status_code == 200:
                commit = reply.json()["model"]["commit_hash"]
                versions[commit[:7]] += 1
                streak = streak + 1 if commit == second else 0
                if streak >= 500:
                    done.set()  # promoted: it answers all traffic now

    async with httpx.AsyncClient(base_url="http://localhost:8080", timeout=30) as client:
        await asyncio.gather(*(caller(client) for _ in range(16)))
    took = time.monotonic() - started
    print(f"[check] {sum(statuses.values())} requests in {took:.1f} s: statuses {dict(statuses)}, "
          f"answered by {dict(versions)}")
    if not done.is_set():
        sys.exit("[check] FAILED: version 2 was not rolled out in time")
    if set(statuses) != {200}:
        sys.exit("[check] FAILED: requests failed during the rollout")

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
PYTHON
say "model server events:"
compose exec -T model-server python -c 'import json, urllib.request
for e in json.load(urllib.request.urlopen("http://127.0.0.1:8000/deployment"))["events"]:
    print("  ", e["time"], e["event"], (e.get("version") or {}).get("commit_hash", "")[:7], e.get("reason", ""))'

say "compose down -v"
trap - EXIT
compose down -v >/dev/null 2>&1
rm -rf "$WS"
say "passed"
