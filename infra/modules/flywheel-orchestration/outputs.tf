output "step_functions_state_machine_arn" {
  value = aws_sfn_state_machine.db_refresh.arn
}

output "sns_topic_arn" {
  value = aws_sns_topic.alerts.arn
}

output "lock_table_name" {
  value = aws_dynamodb_table.lock.name
}

output "operator_role_arn" {
  value = aws_iam_role.operator.arn
}
