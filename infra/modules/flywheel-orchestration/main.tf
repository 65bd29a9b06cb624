# The db-refresh orchestration of one environment: the state machine deployed from the exported
# definition, a Glue job per step, the alert topic, the log group, the cross-machine lock and the roles.

locals {
  prefix       = "omc-flywheel-${var.env}"
  job_arns     = [for job in aws_glue_job.step : job.arn]
  bucket_arn   = "arn:aws:s3:::${var.data_bucket}"
  written_arns = [for p in var.written_prefixes : "${local.bucket_arn}/${p}*"]
  source_arns  = [for p in var.source_prefixes : "${local.bucket_arn}/${p}*"]
}

data "aws_caller_identity" "current" {}

resource "aws_sns_topic" "alerts" {
  name              = var.sns_topic_name
  kms_master_key_id = aws_kms_key.flywheel.arn
}

resource "aws_cloudwatch_log_group" "state_machine" {
  name              = "/aws/vendedlogs/states/${var.state_machine_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.flywheel.arn
}

# The catalog database the jobs register part tables in (aws/catalog.py refuses to create it on AWS:
# `database-missing` names this stack).
resource "aws_glue_catalog_database" "data" {
  name         = var.glue_database
  description  = "omc-flywheel ${var.env}: part tables registered by db-refresh"
  location_uri = "s3://${var.data_bucket}/"
}

resource "aws_dynamodb_table" "lock" {
  name         = var.lock_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "lock_id"

  attribute {
    name = "lock_id"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }
}

resource "aws_glue_job" "step" {
  for_each = var.glue_jobs

  name              = each.value.name
  role_arn          = aws_iam_role.glue_job.arn
  glue_version      = "5.0" # Spark 3.5, Python 3.11, Java 17: the line `make test-spark` pins (docs/spark.md)
  worker_type       = each.value.worker_type
  number_of_workers = each.value.workers
  timeout           = each.value.timeout_minutes
  # S3 writes and bookmarks encrypted with the stack's key (operations.tf)
  security_configuration = aws_glue_security_configuration.jobs.name

  command {
    name            = "glueetl"
    script_location = "${var.glue_artifacts_prefix}/flywheel_glue_entry.py"
    python_version  = "3"
  }

  execution_property {
    # contexts of one step (step 3) run at once; flywheel refuses to start a step twice itself
    max_concurrent_runs = each.value.max_concurrent_runs
  }

  # as `flywheel aws package` writes them in glue-job.json; job output goes to /aws-glue/jobs/output
  # and /aws-glue/jobs/error with the JobRunId as stream (what `flywheel logs` reads)
  default_arguments = {
    "--job-language"                     = "python"
    "--additional-python-modules"        = "${var.glue_artifacts_prefix}/omc_flywheel-${var.flywheel_version}-py3-none-any.whl"
    "--python-modules-installer-option"  = "--no-deps"
    "--enable-continuous-cloudwatch-log" = "false"
    "--enable-metrics"                   = "true"
    # Spark's catalog is the Glue Data Catalog: jobs read the part tables by name (catalog.read_part_table)
    "--enable-glue-datacatalog" = "true"
  }
}

resource "aws_sfn_state_machine" "db_refresh" {
  name       = var.state_machine_name
  role_arn   = aws_iam_role.state_machine.arn
  type       = "STANDARD"
  definition = var.definition

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.state_machine.arn}:*"
    include_execution_data = true
    level                  = "ALL"
  }

  # CreateStateMachine checks that the role may deliver logs ("not authorized to access the Log
  # Destination"): the role's policy must exist first, and Terraform only knows that when told.
  depends_on = [aws_iam_role_policy.state_machine]
}
