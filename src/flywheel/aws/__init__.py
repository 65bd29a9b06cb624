"""AWS backends of flywheel: Glue jobs and catalog, Step Functions, S3, DynamoDB lock, logs, SNS.

Nothing here is imported by `import flywheel`; every module imports boto3 lazily, inside functions.
"""
