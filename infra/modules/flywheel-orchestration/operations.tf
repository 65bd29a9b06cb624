# What runs beside the jobs: the key, alerts that fire whatever the state machine did, alarms, the
# nightly schedule, the Glue log groups and the Glue security configuration.

# -- one customer managed key for the topic, the log groups, the bucket and the Glue jobs ------------
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html
# https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html (EventBridge and CloudWatch publish
# to an encrypted topic only when the key policy lets their service principals use the key)

data "aws_iam_policy_document" "key" {
  statement {
    sid       = "Account"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
  statement {
    sid       = "AlertPublishers"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com", "cloudwatch.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "flywheel" {
  description         = "${local.prefix}: alerts, logs, data bucket, Glue jobs"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.key.json
}

resource "aws_kms_alias" "flywheel" {
  name          = "alias/${local.prefix}"
  target_key_id = aws_kms_key.flywheel.key_id
}

# -- alerts: the topic accepts EventBridge and CloudWatch alarms ------------------------------------

data "aws_iam_policy_document" "alerts_topic" {
  statement {
    sid       = "Account"
    actions   = ["sns:Publish", "sns:GetTopicAttributes", "sns:Subscribe"]
    resources = [aws_sns_topic.alerts.arn]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "EventBridgeAndAlarms"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com", "cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_sns_topic_policy" "alerts" {
  arn    = aws_sns_topic.alerts.arn
  policy = data.aws_iam_policy_document.alerts_topic.json
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alert_emails)
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = each.value
}

# -- an alert for every execution that ends badly -----------------------------------------------------
# The alert of every step outside a Parallel: those tasks have no Catch (so the execution fails in the
# Glue task and a redrive reruns it), and a Catch would not run on a States.Runtime error, an execution
# timeout or an abort anyway; the execution status event is sent in every case.
# https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html ("Step Functions Execution Status Change")

resource "aws_cloudwatch_event_rule" "execution_ended_badly" {
  name          = "${local.prefix}-db-refresh-execution-failed"
  description   = "db-refresh execution FAILED, TIMED_OUT or ABORTED"
  event_pattern = <<-JSON
    {
      "source": ["aws.states"],
      "detail-type": ["Step Functions Execution Status Change"],
      "detail": {
        "status": ["FAILED", "TIMED_OUT", "ABORTED"],
        "stateMachineArn": ["${aws_sfn_state_machine.db_refresh.arn}"]
      }
    }
  JSON
}

resource "aws_cloudwatch_event_target" "execution_ended_badly" {
  rule = aws_cloudwatch_event_rule.execution_ended_badly.name
  arn  = aws_sns_topic.alerts.arn

  input_transformer {
    input_paths = {
      status    = "$.detail.status"
      execution = "$.detail.executionArn"
      name      = "$.detail.name"
    }
    # an object, so each field reads on its own line in the email
    input_template = <<-JSON
      {
        "alert": "db-refresh (${var.env}) execution <name> ended <status>",
        "execution": "<execution>",
        "status": "flywheel sfn status <execution> --env ${var.env}",
        "recover": "flywheel sfn recover <execution> --env ${var.env}"
      }
    JSON
  }
}

# Glue runs started by the local runner (the Glue executor) have no state machine to alert for them.
# https://docs.aws.amazon.com/glue/latest/dg/automating-awsglue-with-cloudwatch-events.html ("Glue Job State Change")
resource "aws_cloudwatch_event_rule" "glue_job_failed" {
  name          = "${local.prefix}-db-refresh-glue-job-failed"
  description   = "a db-refresh Glue job run FAILED, TIMEOUT or ERROR"
  event_pattern = <<-JSON
    {
      "source": ["aws.glue"],
      "detail-type": ["Glue Job State Change"],
      "detail": {
        "state": ["FAILED", "TIMEOUT", "ERROR"],
        "jobName": ${local.job_names_json}
      }
    }
  JSON
}

resource "aws_cloudwatch_event_target" "glue_job_failed" {
  rule = aws_cloudwatch_event_rule.glue_job_failed.name
  arn  = aws_sns_topic.alerts.arn

  input_transformer {
    input_paths = {
      job   = "$.detail.jobName"
      run   = "$.detail.jobRunId"
      state = "$.detail.state"
    }
    input_template = <<-JSON
      {
        "alert": "db-refresh (${var.env}) Glue job <job> run <run> ended <state>",
        "logs": "aws logs tail /aws-glue/jobs/error --log-stream-name-prefix <run>"
      }
    JSON
  }
}

# -- alarms -------------------------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/procedure-cw-metrics.html (AWS/States execution metrics)

locals {
  job_names_json = jsonencode([for job in aws_glue_job.step : job.name])
  execution_alarms = {
    failed    = "ExecutionsFailed"
    timed_out = "ExecutionsTimedOut"
    aborted   = "ExecutionsAborted"
  }
}

resource "aws_cloudwatch_metric_alarm" "executions" {
  for_each            = local.execution_alarms
  alarm_name          = "${var.state_machine_name}-${replace(each.key, "_", "-")}"
  alarm_description   = "db-refresh (${var.env}): ${each.value} >= 1. Recover with: flywheel sfn recover <execution-arn> --env ${var.env}"
  namespace           = "AWS/States"
  metric_name         = each.value
  dimensions          = { StateMachineArn = aws_sfn_state_machine.db_refresh.arn }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}

resource "aws_cloudwatch_metric_alarm" "no_success" {
  count               = var.schedule_expression == null ? 0 : 1
  alarm_name          = "${var.state_machine_name}-no-success-in-a-day"
  alarm_description   = "db-refresh (${var.env}): no execution succeeded in 24 h although one is scheduled nightly"
  namespace           = "AWS/States"
  metric_name         = "ExecutionsSucceeded"
  dimensions          = { StateMachineArn = aws_sfn_state_machine.db_refresh.arn }
  statistic           = "Sum"
  period              = 86400
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}

# -- the nightly run (optional) -----------------------------------------------------------------------
# https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-targets-templated.html

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.db_refresh.arn]
  }
}

resource "aws_iam_role" "scheduler" {
  count              = var.schedule_expression == null ? 0 : 1
  name               = "${local.prefix}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

resource "aws_iam_role_policy" "scheduler" {
  count  = var.schedule_expression == null ? 0 : 1
  name   = "${local.prefix}-scheduler"
  role   = aws_iam_role.scheduler[0].id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "nightly" {
  count                        = var.schedule_expression == null ? 0 : 1
  name                         = "${local.prefix}-db-refresh-nightly"
  schedule_expression          = var.schedule_expression
  schedule_expression_timezone = var.schedule_timezone

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_sfn_state_machine.db_refresh.arn
    role_arn = aws_iam_role.scheduler[0].arn
    input    = jsonencode({ skip = [] })
    retry_policy {
      maximum_retry_attempts = 0 # a second start would run the pipeline twice; the alarms report a miss
    }
  }
}

# -- Glue: log groups with retention, and a security configuration ------------------------------------
# Glue jobs write to these account-wide groups (adopt existing ones with `terraform import`); they are
# encrypted here, on the groups, and not through the security configuration, whose CloudWatch encryption
# would move the logs to a group per configuration that `flywheel logs` does not read.
# https://docs.aws.amazon.com/glue/latest/dg/encryption-security-configuration.html
# https://docs.aws.amazon.com/glue/latest/dg/monitor-continuous-logging.html

resource "aws_cloudwatch_log_group" "glue" {
  for_each          = toset(["/aws-glue/jobs/output", "/aws-glue/jobs/error", "/aws-glue/jobs/logs-v2"])
  name              = each.value
  retention_in_days = var.glue_log_retention_days
  kms_key_id        = aws_kms_key.flywheel.arn
}

resource "aws_glue_security_configuration" "jobs" {
  name = "${local.prefix}-jobs"

  encryption_configuration {
    s3_encryption {
      s3_encryption_mode = "SSE-KMS"
      kms_key_arn        = aws_kms_key.flywheel.arn
    }
    job_bookmarks_encryption {
      job_bookmarks_encryption_mode = "CSE-KMS"
      kms_key_arn                   = aws_kms_key.flywheel.arn
    }
    cloudwatch_encryption {
      cloudwatch_encryption_mode = "DISABLED"
    }
  }
}
