# Lake Formation: where the account governs the catalog with Lake Formation, IAM alone does not let a role
# read or write a table ("Insufficient Lake Formation permission(s)", the runbook's common step-4
# failure). The data bucket is registered as a data location, and the two roles that touch the catalog
# get grants on the database, its tables, the location, and DESCRIBE on `default` (Spark with
# --enable-glue-datacatalog reads it at start-up). Accounts that do not use Lake Formation set
# lake_formation = false. The principal applying this stack must be a Lake Formation administrator.
# https://docs.aws.amazon.com/lake-formation/latest/dg/register-data-lake.html
# https://docs.aws.amazon.com/lake-formation/latest/dg/granting-catalog-permissions.html

locals {
  catalog_principals = var.lake_formation ? {
    glue_job = aws_iam_role.glue_job.arn
    operator = aws_iam_role.operator.arn
  } : {}
}

resource "aws_lakeformation_resource" "data" {
  count = var.lake_formation ? 1 : 0
  arn   = "arn:aws:s3:::${var.data_bucket}"
  # hybrid access: IAM-only readers of other tables in the account keep working while these are granted
  hybrid_access_enabled = true
}

resource "aws_lakeformation_permissions" "data_location" {
  for_each    = local.catalog_principals
  principal   = each.value
  permissions = ["DATA_LOCATION_ACCESS"]

  data_location {
    arn = aws_lakeformation_resource.data[0].arn
  }
}

resource "aws_lakeformation_permissions" "database" {
  for_each    = local.catalog_principals
  principal   = each.value
  permissions = ["DESCRIBE", "CREATE_TABLE", "ALTER"]

  database {
    name = aws_glue_catalog_database.data.name
  }
}

resource "aws_lakeformation_permissions" "tables" {
  for_each    = local.catalog_principals
  principal   = each.value
  permissions = ["DESCRIBE", "SELECT", "INSERT", "DELETE", "ALTER"]

  table {
    database_name = aws_glue_catalog_database.data.name
    wildcard      = true
  }
}

resource "aws_lakeformation_permissions" "default_database" {
  for_each    = var.lake_formation ? { glue_job = aws_iam_role.glue_job.arn } : {}
  principal   = each.value
  permissions = ["DESCRIBE"]

  database {
    name = "default"
  }
}
