#!/bin/sh
# One-shot MinIO setup: the lakehouse and MLflow buckets, and a platform user whose keys
# (S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY) can read and write those two buckets and nothing else.
# Idempotent: a re-run of the stack leaves existing buckets, objects and users as they are.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$LAKEHOUSE_BUCKET" "local/$MLFLOW_BUCKET"

cat >/tmp/wattflow-platform-policy.json <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
     "Resource": ["arn:aws:s3:::$LAKEHOUSE_BUCKET", "arn:aws:s3:::$MLFLOW_BUCKET"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::$LAKEHOUSE_BUCKET/*", "arn:aws:s3:::$MLFLOW_BUCKET/*"]}
  ]
}
JSON
mc admin policy create local wattflow-platform /tmp/wattflow-platform-policy.json
mc admin user add local "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
mc admin policy attach local wattflow-platform --user "$S3_ACCESS_KEY_ID" 2>/dev/null || true
touch /tmp/buckets-ready
