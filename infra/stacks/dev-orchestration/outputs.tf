output "step_functions_state_machine_arn" {
  description = "Start executions with: aws stepfunctions start-execution --state-machine-arn <this> --input file://execution-input.json"
  value       = module.orchestration.step_functions_state_machine_arn
}

output "sns_topic_arn" {
  value = module.orchestration.sns_topic_arn
}

output "lock_table_name" {
  value = module.orchestration.lock_table_name
}

output "operator_role_arn" {
  value = module.orchestration.operator_role_arn
}
