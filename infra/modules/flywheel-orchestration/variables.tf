# Inputs of one environment's orchestration: names come from project.yaml and pipeline.yaml
# (tests/aws/test_terraform.py checks that they agree).

variable "env" {
  description = "Environment name (dev, prod)."
  type        = string
}

variable "region" {
  type = string
}

variable "state_machine_name" {
  description = "aws.state_machine in project.yaml."
  type        = string
}

variable "definition" {
  description = "The ASL definition: exactly the file `flywheel sfn export` writes."
  type        = string
}

variable "sns_topic_name" {
  description = "aws.sns_topic in project.yaml (the exported definition publishes failures to it)."
  type        = string
}

variable "lock_table_name" {
  description = "aws.lock_table in project.yaml (one runner at a time across machines)."
  type        = string
}

variable "data_bucket" {
  description = "The bucket of aws.s3_root: sources, outputs, job results and the Glue entry script."
  type        = string
}

variable "glue_database" {
  type = string
}

variable "glue_jobs" {
  description = "One Glue job per pipeline step, keyed by step id."
  type = map(object({
    name                = string
    worker_type         = string
    workers             = number
    timeout_minutes     = number
    max_concurrent_runs = number
  }))
}

variable "glue_artifacts_prefix" {
  description = "Where `flywheel aws package --upload` puts the entry script and wheel: {s3_root}/_flywheel/glue/<version>."
  type        = string
}

variable "flywheel_version" {
  description = "The packaged flywheel version the jobs run (the wheel omc_flywheel-<version>-py3-none-any.whl)."
  type        = string
}

variable "operator_principals" {
  description = "Who may assume the operator role (SSO roles of the data engineers)."
  type        = list(string)
}

variable "log_retention_days" {
  type    = number
  default = 90
}

variable "lake_formation" {
  description = "The account governs the Glue catalog with Lake Formation: register the bucket and grant the roles (lakeformation.tf)."
  type        = bool
  default     = true
}

variable "source_prefixes" {
  description = "Prefixes of the data bucket others deliver (raw/, config/): read by the jobs, deleted by no one here."
  type        = list(string)
  default     = ["raw/", "config/"]
}

variable "written_prefixes" {
  description = "Prefixes the steps and flywheel write and replace (and so may delete under)."
  type        = list(string)
  default     = ["split_part/", "er/", "reports/", "_flywheel/"]
}

variable "staging_prefix" {
  description = "Job results and run scratch: expired after staging_days by the bucket's lifecycle."
  type        = string
  default     = "_flywheel/results/"
}

variable "staging_days" {
  type    = number
  default = 30
}

variable "noncurrent_version_days" {
  description = "How long an overwritten or deleted object version is kept (undo window)."
  type        = number
  default     = 30
}

variable "glue_log_retention_days" {
  type    = number
  default = 30
}

variable "schedule_expression" {
  description = "EventBridge Scheduler expression of the nightly run, e.g. cron(0 2 * * ? *); null: no schedule."
  type        = string
  default     = null
}

variable "schedule_timezone" {
  type    = string
  default = "UTC"
}

variable "alert_emails" {
  description = "Addresses subscribed to the alert topic (each confirms by email)."
  type        = list(string)
  default     = []
}
