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


def parallel(tasks: dict[str, dict[str, Any]], nxt: str | None, **extra: Any) -> dict[str, Any]:
    """A Parallel state whose branches are one state each, named as in `tasks`."""
    ending: dict[str, Any] = {"Next": nxt} if nxt else {"End": True}
    branches = [branch({name: state}, name) for name, state in tasks.items()]
    return {"Type": "Parallel", "Branches": branches, "ResultPath": None, **extra, **ending}


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


def glue_task(resource: str, job: str, nxt: str | None, arguments: dict[str, Any] | None = None,
              **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A Task that starts `job` through `resource` (an integration's ARN)."""
    ending: dict[str, Any] = {"Next": nxt} if nxt else {"End": True}
    return {
        "Type": "Task",
        "Resource": resource,
        "Parameters": {"JobName": job, **({"Arguments": arguments} if arguments else {})},
        "ResultPath": None,
        **ending,
        **extra,
    }


def sync_task(job: str, nxt: str | None, arguments: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return glue_task("arn:aws:states:::glue:startJobRun.sync", job, nxt, arguments, **extra)


CATCH_ALL = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotifyFailure"}]


def console_sync_map_catch() -> dict[str, Any]:
    """Optimized `.sync` integration; step 3 as an inline Map over the two contexts (ItemSelector);
    step 4 retried; every step caught into an SNS alert, then Fail."""
    return {
        "Comment": "db-refresh, built in the console (.sync, Map, Retry, Catch to SNS)",
        "StartAt": "Step1_ParallelSplitJobs",
        "States": {
            "Step1_ParallelSplitJobs": parallel(
                {"AddressableSplit": sync_task(SPLIT_A, None), "InfobaseSplit": sync_task(SPLIT_B, None)},
                "Step2_RegisterPartTables",
                Catch=CATCH_ALL,
            ),
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
            "Step5_Reports": parallel(
                {"Monitor": sync_task(MONITOR, None), "Cleanrooms": sync_task(CLEANROOMS, None)}, None, Catch=CATCH_ALL
            ),
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
        return glue_task("arn:aws:states:::glue:startJobRun", job, nxt, arguments)

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


def sdk_start(job: str, nxt: str | None, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """The AWS SDK `startJobRun` with nothing after it: the state ends when the job *started*."""
    return glue_task("arn:aws:states:::aws-sdk:glue:startJobRun", job, nxt, arguments)


def console_sdk_nested_parallel(timeout_seconds: int | None = None) -> dict[str, Any]:
    """AWS SDK request-response starts for the splits inside a nested Parallel, step 3's contexts as
    Parallel branches told apart only by their state names (`RegisterAddressableIds`,
    `RegisterInfobaseAttributes`, the aliases in pipeline.yaml), a `Pass` that belongs to no step, then
    `.sync` steps; with `timeout_seconds`, the whole execution times out (`ExecutionTimedOut`)."""
    machine: dict[str, Any] = {
        "Comment": "db-refresh, built in the console (SDK starts, nested Parallel, contexts by state name)",
        "StartAt": "Step1_ParallelSplitJobs",
        "States": {
            "Step1_ParallelSplitJobs": parallel(
                {
                    "Step1a_Nested": parallel({"SplitAddressable": sdk_start(SPLIT_A, None)}, None),
                    "SplitInfobase": sdk_start(SPLIT_B, None),
                },
                "Step2_RegisterPartTables",
            ),
            "Step2_RegisterPartTables": parallel(
                {
                    "RegisterAddressableIds": sync_task(REGISTER, None, {"--part": "1"}),
                    "RegisterInfobaseAttributes": sync_task(REGISTER, None, {"--part": "2"}),
                },
                "Step2b_Note",
            ),
            "Step2b_Note": {
                "Type": "Pass",
                "Result": {"note": "tables registered"},
                "ResultPath": None,
                "Next": "Step3_PreparePartTables",
            },
            "Step3_PreparePartTables": sync_task(PREPARE, "Step4_CreateErTable"),
            "Step4_CreateErTable": sync_task(ER, "Step5_Reports"),
            "Step5_Reports": parallel(
                {"Step5_DataMonitor": sync_task(MONITOR, None), "Step6_Cleanrooms": sync_task(CLEANROOMS, None)}, None
            ),
        },
    }
    if timeout_seconds is not None:
        machine["TimeoutSeconds"] = timeout_seconds
    return machine


def console_sdk_heartbeat() -> dict[str, Any]:
    """AWS SDK `.waitForTaskToken` with `HeartbeatSeconds`: a job that stops sending heartbeats times
    the task out (`States.HeartbeatTimeout`) while its Glue run goes on. Step 3's contexts are an inline
    Map over items that spell the table (`{"table": "part_addressable_ids"}`), read by ItemSelector."""
    resource = "arn:aws:states:::aws-sdk:glue:startJobRun.waitForTaskToken"
    beat = {"HeartbeatSeconds": 2, "TimeoutSeconds": 20}
    return {
        "Comment": "db-refresh, built in the console (callbacks with heartbeats, Map of tables)",
        "StartAt": "Step1_ParallelSplitJobs",
        "States": {
            "Step1_ParallelSplitJobs": parallel(
                {
                    "A": callback_task(resource, SPLIT_A, None, {}, **beat),
                    "B": callback_task(resource, SPLIT_B, None, {}, **beat),
                },
                "Step2_RegisterPartTables",
            ),
            "Step2_RegisterPartTables": {
                "Type": "Map",
                "ItemsPath": "$.tables",
                "ItemSelector": {"table.$": "$$.Map.Item.Value.table"},
                "MaxConcurrency": 2,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "RegisterTable",
                    "States": {
                        "RegisterTable": callback_task(resource, REGISTER, None, {"--table_name.$": "$.table"}, **beat)
                    },
                },
                "ResultPath": None,
                "Next": "Step3_PreparePartTables",
            },
            "Step3_PreparePartTables": callback_task(resource, PREPARE, "Step4_CreateErTable", {}, **beat),
            "Step4_CreateErTable": callback_task(resource, ER, "Step5_DataMonitorReport", {}, **beat),
            "Step5_DataMonitorReport": callback_task(resource, MONITOR, "Step6_CleanroomsReport", {}, **beat),
            "Step6_CleanroomsReport": callback_task(resource, CLEANROOMS, None, {}, **beat),
        },
    }


MACHINES = {
    "console-sdk-polling": console_sdk_polling,
    "console-sync-map-catch": console_sync_map_catch,
    # the optimized `glue:startJobRun.waitForTaskToken` is not in this list: moto's interpreter supports
    # only `.sync` for the optimized Glue integration (its callbacks go through the SDK integration)
    "console-callback-sdk": lambda: console_callbacks("arn:aws:states:::aws-sdk:glue:startJobRun.waitForTaskToken"),
    "console-request-response-timeout": console_request_response_timeout,
    "console-sdk-nested-parallel": console_sdk_nested_parallel,
    "console-sdk-nested-parallel-timeout": lambda: console_sdk_nested_parallel(timeout_seconds=4),
    "console-sdk-heartbeat": console_sdk_heartbeat,
}
