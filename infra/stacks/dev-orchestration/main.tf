# db-refresh orchestration in dev. Apply with the flywheel-dev profile:
#   flywheel sfn export --env dev --output infra/stacks/dev-orchestration/db-refresh.asl.json
#   terraform -chdir=infra/stacks/dev-orchestration apply
# The definition file is generated: never edit it by hand (a test compares it with the export).

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.60"
    }
  }
  backend "s3" {
    bucket         = "omc-flywheel-dev-terraform-state"
    key            = "orchestration/terraform.tfstate"
    region         = "us-east-1"
    dynamodb_table = "omc-flywheel-dev-terraform-locks"
  }
}

provider "aws" {
  region  = "us-east-1"
  profile = "flywheel-dev"
}

variable "flywheel_version" {
  description = "The flywheel version uploaded by `flywheel aws package --upload --env dev`."
  type        = string
}

variable "operator_principals" {
  description = "IAM/SSO role ARNs of the people who run and recover db-refresh in dev."
  type        = list(string)
}

variable "alert_emails" {
  description = "Who receives the alerts (failed, timed-out or aborted executions, failed Glue runs, alarms)."
  type        = list(string)
  default     = []
}

variable "schedule_expression" {
  description = "The nightly run, e.g. \"cron(0 2 * * ? *)\" (EventBridge Scheduler, UTC); null: started by hand."
  type        = string
  default     = null
}

module "orchestration" {
  source = "../../modules/flywheel-orchestration"

  env                   = "dev"
  region                = "us-east-1"
  state_machine_name    = "omc-flywheel-dev-db-refresh"
  definition            = file("${path.module}/db-refresh.asl.json")
  sns_topic_name        = "omc-flywheel-dev-db-refresh-alerts"
  lock_table_name       = "omc-flywheel-dev-locks"
  data_bucket           = "omc-flywheel-dev-data"
  glue_database         = "omc_flywheel_dev"
  glue_artifacts_prefix = "s3://omc-flywheel-dev-data/_flywheel/glue/${var.flywheel_version}"
  flywheel_version      = var.flywheel_version
  operator_principals   = var.operator_principals
  alert_emails          = var.alert_emails
  schedule_expression   = var.schedule_expression
  log_retention_days    = 90

  glue_jobs = {
    "addressable-split-and-part" = {
      name                = "omc-flywheel-dev-addressable-split-and-part"
      worker_type         = "G.2X"
      workers             = 20
      timeout_minutes     = 120
      max_concurrent_runs = 1
    }
    "infobase-split-and-part" = {
      name                = "omc-flywheel-dev-infobase-split-and-part"
      worker_type         = "G.2X"
      workers             = 20
      timeout_minutes     = 120
      max_concurrent_runs = 1
    }
    "register-part-tables" = {
      name                = "omc-flywheel-dev-register-part-tables"
      worker_type         = "G.1X"
      workers             = 2
      timeout_minutes     = 30
      max_concurrent_runs = 2
    }
    "prepare-part-tables" = {
      name                = "omc-flywheel-dev-prepare-part-tables"
      worker_type         = "G.1X"
      workers             = 2
      timeout_minutes     = 30
      max_concurrent_runs = 1
    }
    "create-part-addressable-ids-er-table" = {
      name                = "omc-flywheel-dev-create-part-addressable-ids-er-table"
      worker_type         = "G.2X"
      workers             = 10
      timeout_minutes     = 60
      max_concurrent_runs = 1
    }
    "generate-data-monitor-report" = {
      name                = "omc-flywheel-dev-generate-data-monitor-report"
      worker_type         = "G.1X"
      workers             = 2
      timeout_minutes     = 20
      max_concurrent_runs = 1
    }
    "generate-cleanrooms-report" = {
      name                = "omc-flywheel-dev-generate-cleanrooms-report"
      worker_type         = "G.1X"
      workers             = 2
      timeout_minutes     = 20
      max_concurrent_runs = 1
    }
  }
}
