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
