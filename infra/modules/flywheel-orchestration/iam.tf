# Three roles, each allowed exactly what its caller does (tests/aws/test_terraform.py records every AWS
# action flywheel and the state machine call against moto and checks each is allowed here):
#   state_machine  what the exported definition calls: Glue job runs, SNS, its log delivery
#   glue_job       what the job code reads and writes: the data bucket (writes and deletes only under
#                  var.written_prefixes, never under var.source_prefixes), the catalog, its logs
#   operator       what `flywheel` calls from an operator's machine: run, recover, check, logs, lock

# -- the state machine -------------------------------------------------------------------------

data "aws_iam_policy_document" "state_machine_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "state_machine" {
  statement {
    sid       = "GlueJobRuns"
    actions   = ["glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"]
    resources = local.job_arns
  }
  statement {
    sid       = "Alerts"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }
  statement {
    sid       = "AlertsKey" # publishing to the encrypted topic
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.flywheel.arn]
  }
  statement {
    sid = "LogDelivery"
    actions = [
      "logs:CreateLogDelivery",
      "logs:GetLogDelivery",
      "logs:UpdateLogDelivery",
      "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries",
      "logs:PutResourcePolicy",
      "logs:DescribeResourcePolicies",
      "logs:DescribeLogGroups",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role" "state_machine" {
  name               = "${local.prefix}-sfn"
  assume_role_policy = data.aws_iam_policy_document.state_machine_assume.json
}

resource "aws_iam_role_policy" "state_machine" {
  name   = "${local.prefix}-sfn"
  role   = aws_iam_role.state_machine.id
  policy = data.aws_iam_policy_document.state_machine.json
}

# -- the Glue jobs -----------------------------------------------------------------------------

data "aws_iam_policy_document" "glue_job_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["glue.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "glue_job" {
  statement {
    sid       = "DataList"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }
  statement {
    sid       = "DataRead"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/*"]
  }
  statement {
    sid       = "DataWrite" # only where the pipeline writes: never raw/ or config/, never bucket-wide
    actions   = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = local.written_arns
  }
  statement {
    sid       = "SourcesAreReadOnly" # whatever else is attached to the role
    effect    = "Deny"
    actions   = ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration"]
    resources = local.source_arns
  }
  statement {
    sid       = "Key" # the bucket, topic and logs are encrypted with the stack's key (operations.tf)
    actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [aws_kms_key.flywheel.arn]
  }
  statement {
    sid = "Catalog"
    actions = [
      "glue:GetDatabase",
      "glue:GetTable",
      "glue:GetTables",
      "glue:CreateTable",
      "glue:UpdateTable",
      "glue:GetPartition",
      "glue:GetPartitions",
      "glue:BatchGetPartition",
      "glue:CreatePartition",
      "glue:BatchCreatePartition",
      "glue:UpdatePartition",
      "glue:BatchUpdatePartition",
      "glue:BatchDeletePartition",
    ]
    resources = [
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:catalog",
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:database/${var.glue_database}",
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:table/${var.glue_database}/*",
    ]
  }
  statement {
    sid     = "DefaultDatabase" # Spark with --enable-glue-datacatalog reads `default` at start-up
    actions = ["glue:GetDatabase", "glue:GetDatabases"]
    resources = [
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:catalog",
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:database/default",
    ]
  }
  statement {
    sid       = "LakeFormation" # credentials for the registered location (lakeformation.tf)
    actions   = ["lakeformation:GetDataAccess"]
    resources = ["*"]
  }
  statement {
    sid       = "JobLogs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/aws-glue/*"]
  }
  statement {
    sid       = "Metrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
  }
}

resource "aws_iam_role" "glue_job" {
  name               = "${local.prefix}-glue"
  assume_role_policy = data.aws_iam_policy_document.glue_job_assume.json
}

resource "aws_iam_role_policy" "glue_job" {
  name   = "${local.prefix}-glue"
  role   = aws_iam_role.glue_job.id
  policy = data.aws_iam_policy_document.glue_job.json
}

# -- the operators (flywheel on a laptop) -------------------------------------------------------

data "aws_iam_policy_document" "operator_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = var.operator_principals
    }
  }
}

data "aws_iam_policy_document" "operator" {
  statement {
    sid = "StepFunctions"
    actions = [
      "states:DescribeStateMachine",
      "states:DescribeStateMachineForExecution",
      "states:ListExecutions",
      "states:DescribeExecution",
      "states:GetExecutionHistory",
      "states:StartExecution",
      "states:StopExecution",
      "states:RedriveExecution",
    ]
    resources = [
      aws_sfn_state_machine.db_refresh.arn,
      "arn:aws:states:${var.region}:${data.aws_caller_identity.current.account_id}:execution:${var.state_machine_name}:*",
    ]
  }
  statement {
    sid       = "GlueJobRuns"
    actions   = ["glue:GetJob", "glue:GetJobs", "glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"]
    resources = local.job_arns
  }
  statement {
    sid       = "Listings" # these actions take no resource narrower than the account
    actions   = ["glue:GetJobs", "glue:ListJobs", "states:ListStateMachines", "logs:DescribeLogGroups"]
    resources = ["*"]
  }
  statement {
    sid = "Catalog"
    actions = [
      "glue:GetDatabase",
      "glue:CreateDatabase",
      "glue:GetTable",
      "glue:GetTables",
      "glue:CreateTable",
      "glue:UpdateTable",
      "glue:GetPartition",
      "glue:GetPartitions",
      "glue:BatchGetPartition",
      "glue:CreatePartition",
      "glue:BatchCreatePartition",
      "glue:UpdatePartition",
      "glue:BatchUpdatePartition",
      "glue:BatchDeletePartition",
    ]
    resources = [
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:catalog",
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:database/${var.glue_database}",
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:table/${var.glue_database}/*",
    ]
  }
  statement {
    sid       = "LakeFormation"
    actions   = ["lakeformation:GrantPermissions", "lakeformation:ListPermissions", "lakeformation:GetDataAccess"]
    resources = ["*"]
  }
  statement {
    sid       = "DataList"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [local.bucket_arn]
  }
  statement {
    sid       = "DataRead"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/*"]
  }
  statement {
    sid       = "DataWrite" # only where the pipeline writes: never raw/ or config/, never bucket-wide
    actions   = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = local.written_arns
  }
  statement {
    sid       = "SourcesAreReadOnly" # whatever else is attached to the role
    effect    = "Deny"
    actions   = ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration"]
    resources = local.source_arns
  }
  statement {
    sid       = "Key" # the bucket, topic and logs are encrypted with the stack's key (operations.tf)
    actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [aws_kms_key.flywheel.arn]
  }
  statement {
    sid       = "Lock"
    actions   = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.lock.arn]
  }
  statement {
    sid       = "Alerts"
    actions   = ["sns:Publish", "sns:GetTopicAttributes"]
    resources = [aws_sns_topic.alerts.arn]
  }
  statement {
    sid = "Logs"
    actions = [
      "logs:DescribeLogStreams",
      "logs:GetLogEvents",
      "logs:FilterLogEvents",
      "logs:StartLiveTail",
    ]
    resources = [
      aws_cloudwatch_log_group.state_machine.arn,
      "${aws_cloudwatch_log_group.state_machine.arn}:*",
      "arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/aws-glue/jobs/*",
    ]
  }
  statement {
    sid       = "Preflight"
    actions   = ["iam:SimulatePrincipalPolicy"]
    resources = ["*"]
  }
}

resource "aws_iam_role" "operator" {
  name                 = "${local.prefix}-operator"
  assume_role_policy   = data.aws_iam_policy_document.operator_assume.json
  max_session_duration = 43200 # a refresh takes hours
}

resource "aws_iam_role_policy" "operator" {
  name   = "${local.prefix}-operator"
  role   = aws_iam_role.operator.id
  policy = data.aws_iam_policy_document.operator.json
}
