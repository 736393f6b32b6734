#!/bin/sh
# One S3 identity, the MinIO root user's (the same variables the minio service reads).
set -eu
cat > /tmp/s3.json <<JSON
{"identities": [{"name": "root", "credentials": [{"accessKey": "${MINIO_ROOT_USER}",
  "secretKey": "${MINIO_ROOT_PASSWORD}"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
exec weed server -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3 -s3.port=9000 \
  -s3.config=/tmp/s3.json -master.volumeSizeLimitMB=256 -volume.max=0
