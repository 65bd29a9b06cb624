# The data bucket: sources (raw/, config/, delivered by others and never deleted by flywheel), what the
# steps write (split_part/, er/, reports/) and flywheel's own files (_flywheel/: the Glue package and
# job results). Versioned, so a bad write or delete can be undone; private; encrypted with the stack's
# key. A bucket that already exists is adopted with
#   terraform import module.orchestration.aws_s3_bucket.data <bucket>
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/Versioning.html
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/access-control-block-public-access.html
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lifecycle-mgmt.html

resource "aws_s3_bucket" "data" {
  bucket = var.data_bucket

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.flywheel.arn
    }
    bucket_key_enabled = true # one KMS call per object prefix, not per object: Spark writes many files
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket     = aws_s3_bucket.data.id
  depends_on = [aws_s3_bucket_versioning.data]

  rule {
    id     = "abort-incomplete-uploads" # parts of a multipart upload a killed job left behind
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  rule {
    id     = "expire-replaced-versions" # versions overwritten or deleted by a later refresh
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    expiration {
      expired_object_delete_marker = true
    }
  }

  rule {
    id     = "expire-staging" # job results and scratch of runs (_flywheel/results/), read only by recovery
    status = "Enabled"
    filter {
      prefix = var.staging_prefix
    }
    expiration {
      days = var.staging_days
    }
  }
}

data "aws_iam_policy_document" "data_bucket" {
  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.data.arn, "${aws_s3_bucket.data.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "data" {
  bucket     = aws_s3_bucket.data.id
  policy     = data.aws_iam_policy_document.data_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.data]
}
