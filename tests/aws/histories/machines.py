"""State machines as operators build them by hand in the Step Functions console, not as flywheel exports.

Each one starts the seven db-refresh Glue jobs its own way (state names, integrations, how step 3's two
contexts are spread, retries, catches). `generate.py` runs them in moto's Step Functions interpreter
with faults injected and saves the histories under this folder.

Names and shapes follow the runbook's console (`Step1_ParallelSplitJobs`, `Step2_RegisterPartTables`,
...). The Glue job names are the ones the Terraform stack creates (`omc-flywheel-dev-<step>`).
"""

from __future__ import annotations

from typing import Any

JOB = "omc-flywheel-dev-{}"
SPLIT_A, SPLIT_B = JOB.format("addressable-split-and-part"), JOB.format("infobase-split-and-part")
REGISTER, PREPARE = JOB.format("register-part-tables"), JOB.format("prepare-part-tables")
ER, MONITOR, CLEANROOMS = (
    JOB.format("create-part-addressable-ids-er-table"),
    JOB.format("generate-data-monitor-report"),
    JOB.format("generate-cleanrooms-report"),
)
TOPIC = "arn:aws:sns:us-east-1:123456789012:omc-flywheel-dev-alerts"


def sdk_poll(name: str, job: str, arguments: dict[str, Any], then: str | None) -> dict[str, Any]:
    """The AWS SDK integration as console users wire it: StartJobRun (request-response), then a
    Wait / GetJobRun / Choice loop until the run ends."""
    ending: dict[str, Any] = {"Next": then or f"{name}_Ok"}  # a Choice rule cannot end: Succeed does
    finish: dict[str, Any] = {} if then else {f"{name}_Ok": {"Type": "Succeed"}}
    return {
        **finish,
        f"{name}": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:glue:startJobRun",
            "Parameters": {"JobName": job, "Arguments": arguments},
            "ResultPath": "$.run",
            "Next": f"{name}_Wait",
        },
        f"{name}_Wait": {"Type": "Wait", "Seconds": 1, "Next": f"{name}_Check"},
        f"{name}_Check": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:glue:getJobRun",
            "Parameters": {"JobName": job, "RunId.$": "$.run.JobRunId"},
            "ResultSelector": {"state.$": "$.JobRun.JobRunState"},
            "ResultPath": "$.check",
            "Next": f"{name}_Done",
        },
        f"{name}_Done": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.check.state", "StringEquals": "SUCCEEDED", **ending},
                {
                    "Or": [
                        {"Variable": "$.check.state", "StringEquals": "RUNNING"},
                        {"Variable": "$.check.state", "StringEquals": "STARTING"},
                    ],
                    "Next": f"{name}_Wait",
                },
            ],
            "Default": f"{name}_Failed",
        },
        f"{name}_Failed": {"Type": "Fail", "Error": "GlueJobFailed", "Cause": f"{job} did not succeed"},
    }


def branch(states: dict[str, Any], start: str) -> dict[str, Any]:
    return {"StartAt": start, "States": states}


def console_sdk_polling() -> dict[str, Any]:
    """AWS SDK integration, request-response with a polling loop; step 3 as two Parallel branches whose
    context is spelled `part_addressable_ids` / `part_infobase_attributes` in the arguments."""
    return {
        "Comment": "db-refresh, built in the console (SDK integration, polling)",
        "StartAt": "Step1_ParallelSplitJobs",
        "States": {
            "Step1_ParallelSplitJobs": {
                "Type": "Parallel",
                "Branches": [
                    branch(
                        sdk_poll("SplitAddressable", SPLIT_A, {"--source": "raw/addressable"}, None), "SplitAddressable"
                    ),
                    branch(sdk_poll("SplitInfobase", SPLIT_B, {"--source": "raw/infobase"}, None), "SplitInfobase"),
                ],
                "ResultPath": None,
                "Next": "Step2_RegisterPartTables",
            },
            "Step2_RegisterPartTables": {
                "Type": "Parallel",
                "Branches": [
                    branch(sdk_poll("RegA", REGISTER, {"--table_name": "part_addressable_ids"}, None), "RegA"),
                    branch(sdk_poll("RegB", REGISTER, {"--table_name": "part_infobase_attributes"}, None), "RegB"),
                ],
                "ResultPath": None,
                "Next": "Step3_PreparePartTables",
            },
            **sdk_poll("Step3_PreparePartTables", PREPARE, {}, "Step4_CreateErTable"),
            **sdk_poll("Step4_CreateErTable", ER, {}, "Step5_DataMonitorReport"),
            **sdk_poll("Step5_DataMonitorReport", MONITOR, {}, "Step6_CleanroomsReport"),
            **sdk_poll("Step6_CleanroomsReport", CLEANROOMS, {}, None),
        },
    }


def sync_task(job: str, nxt: str | None, arguments: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    ending: dict[str, Any] = {"Next": nxt} if nxt else {"End": True}
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::glue:startJobRun.sync",
        "Parameters": {"JobName": job, **({"Arguments": arguments} if arguments else {})},
        "ResultPath": None,
        **ending,
        **extra,
    }


CATCH_ALL = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotifyFailure"}]


def console_sync_map_catch() -> dict[str, Any]:
    """Optimized `.sync` integration; step 3 as an inline Map over the two contexts (ItemSelector);
    step 4 retried; every step caught into an SNS alert, then Fail."""
    return {
        "Comment": "db-refresh, built in the console (.sync, Map, Retry, Catch to SNS)",
        "StartAt": "Step1_ParallelSplitJobs",
        "States": {
            "Step1_ParallelSplitJobs": {
                "Type": "Parallel",
                "Branches": [
                    branch({"AddressableSplit": sync_task(SPLIT_A, None)}, "AddressableSplit"),
                    branch({"InfobaseSplit": sync_task(SPLIT_B, None)}, "InfobaseSplit"),
                ],
                "ResultPath": None,
                "Catch": CATCH_ALL,
                "Next": "Step2_RegisterPartTables",
            },
            "Step2_RegisterPartTables": {
                "Type": "Map",
                "ItemsPath": "$.contexts",
                "ItemSelector": {"context.$": "$$.Map.Item.Value"},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "RegisterOne",
                    "States": {"RegisterOne": sync_task(REGISTER, None, {"--context.$": "$.context"})},
                },
                "ResultPath": None,
                "Catch": CATCH_ALL,
                "Next": "Step3_PreparePartTables",
            },
            "Step3_PreparePartTables": sync_task(
                PREPARE,
                "Step4_CreateErTable",
                Retry=[{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 2, "IntervalSeconds": 1}],
                Catch=CATCH_ALL,
            ),
            "Step4_CreateErTable": sync_task(ER, "Step5_Reports", Catch=CATCH_ALL),
            "Step5_Reports": {
                "Type": "Parallel",
                "Branches": [
                    branch({"Monitor": sync_task(MONITOR, None)}, "Monitor"),
                    branch({"Cleanrooms": sync_task(CLEANROOMS, None)}, "Cleanrooms"),
                ],
                "ResultPath": None,
                "Catch": CATCH_ALL,
                "End": True,
            },
            "NotifyFailure": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sns:publish",
                "Parameters": {"TopicArn": TOPIC, "Message.$": "States.JsonToString($.error)"},
                "Next": "Failed",
            },
            "Failed": {"Type": "Fail", "Error": "DbRefreshFailed", "Cause": "a step failed; see the alert"},
        },
    }


def callback_task(resource: str, job: str, nxt: str | None, arguments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    ending: dict[str, Any] = {"Next": nxt} if nxt else {"End": True}
    return {
        "Type": "Task",
        "Resource": resource,
        "Parameters": {"JobName": job, "Arguments": {**arguments, "--task_token.$": "$$.Task.Token"}},
        "ResultPath": None,
        **ending,
        **extra,
    }


def console_callbacks(resource: str) -> dict[str, Any]:
    """Jobs that call back (`SendTaskSuccess` / `SendTaskFailure` with the task token passed as an
    argument): step 3 as two plain states named after the contexts, nested Parallel for the splits,
    a timeout on every task."""
    wait = {"TimeoutSeconds": 4}
    return {
        "Comment": f"db-refresh, built in the console (callbacks through {resource})",
        "StartAt": "Step1_ParallelSplitJobs",
        "States": {
            "Step1_ParallelSplitJobs": {
                "Type": "Parallel",
                "Branches": [
                    branch(
                        {
                            "Inner": {
                                "Type": "Parallel",
                                "Branches": [
                                    branch({"A": callback_task(resource, SPLIT_A, None, {}, **wait)}, "A"),
                                ],
                                "End": True,
                            }
                        },
                        "Inner",
                    ),
                    branch({"B": callback_task(resource, SPLIT_B, None, {}, **wait)}, "B"),
                ],
                "ResultPath": None,
                "Next": "RegisterAddressableIds",
            },
            "RegisterAddressableIds": callback_task(
                resource, REGISTER, "RegisterInfobaseAttributes", {"--which": "a"}, **wait
            ),
            "RegisterInfobaseAttributes": callback_task(resource, REGISTER, "Prepare", {"--which": "b"}, **wait),
            "Prepare": callback_task(resource, PREPARE, "ErTable", {}, **wait),
            "ErTable": callback_task(resource, ER, "Monitor", {}, **wait),
            "Monitor": callback_task(resource, MONITOR, "Cleanrooms", {}, **wait),
            "Cleanrooms": callback_task(resource, CLEANROOMS, None, {}, **wait),
        },
    }


def console_request_response_timeout() -> dict[str, Any]:
    """Optimized request-response starts chained one after the other with no waiting at all (a common
    first attempt), and a `.sync` step 4 with a task timeout shorter than its Glue run."""

    def start(job: str, nxt: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "Type": "Task",
            "Resource": "arn:aws:states:::glue:startJobRun",
            "Parameters": {"JobName": job, **({"Arguments": arguments} if arguments else {})},
            "ResultPath": None,
            "Next": nxt,
        }

    return {
        "Comment": "db-refresh, built in the console (fire-and-forget starts, a timed-out step 4)",
        "StartAt": "StartAddressable",
        "States": {
            "StartAddressable": start(SPLIT_A, "StartInfobase"),
            "StartInfobase": start(SPLIT_B, "Register_part_addressable_ids"),
            "Register_part_addressable_ids": start(REGISTER, "Register_part_infobase_attributes", {"--t": "a"}),
            "Register_part_infobase_attributes": start(REGISTER, "Prepare", {"--t": "b"}),
            "Prepare": sync_task(PREPARE, "ErTable", TimeoutSeconds=2),
            "ErTable": sync_task(ER, "Reports"),
            "Reports": start(MONITOR, "Cleanrooms"),
            "Cleanrooms": sync_task(CLEANROOMS, None),
        },
    }


MACHINES = {
    "console-sdk-polling": console_sdk_polling,
    "console-sync-map-catch": console_sync_map_catch,
    # the optimized `glue:startJobRun.waitForTaskToken` is not in this list: moto's interpreter supports
    # only `.sync` for the optimized Glue integration (its callbacks go through the SDK integration)
    "console-callback-sdk": lambda: console_callbacks("arn:aws:states:::aws-sdk:glue:startJobRun.waitForTaskToken"),
    "console-request-response-timeout": console_request_response_timeout,
}
