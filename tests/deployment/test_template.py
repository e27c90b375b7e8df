"""template.yaml (AWS SAM) is valid by cfn-lint and agrees with the code, without AWS or Docker:
the handler it names imports, every variable it sets is a setting, the image it builds exists,
every schedule names a registered task, and no secret is a plain value."""

import importlib
import json
import re
import subprocess
import sys
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.entrypoint import LambdaHandler, event_kind, scheduled_task_name
from app.internal import metrics
from app.scheduled import SCHEDULED_TASKS
from config.settings import Settings
from root import ROOT_DIR, root_path


class CloudFormationLoader(yaml.SafeLoader):
    """Reads the short forms (!Ref, !GetAtt, !Sub, ...) as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


@cache
def template() -> dict[str, Any]:
    document = yaml.load(root_path("template.yaml").read_text(), CloudFormationLoader)  # noqa: S506
    assert isinstance(document, dict)
    return document


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template()["Resources"].items()
        if resource["Type"] == kind
    }


def functions() -> dict[str, dict[str, Any]]:
    return resources("AWS::Serverless::Function")


def test_cfn_lint_finds_no_error_and_no_warning() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--", "template.yaml"],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_there_are_the_api_the_migration_and_the_worker_functions() -> None:
    assert set(functions()) == {"ApiFunction", "MigrationFunction", "WorkerFunction"}


@pytest.mark.parametrize("name", ["ApiFunction", "MigrationFunction", "WorkerFunction"])
def test_each_function_is_the_image_the_dockerfile_builds_with_a_handler_that_imports(
    name: str,
) -> None:
    function = functions()[name]
    assert function["Properties"]["PackageType"] == "Image"
    metadata = function["Metadata"]
    assert (ROOT_DIR / metadata["DockerContext"] / metadata["Dockerfile"]).is_file()
    [target] = function["Properties"]["ImageConfig"]["Command"]
    module_name, _, attribute = target.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(handler, LambdaHandler)


def setting_names() -> set[str]:
    names = {"APP_ENV"}  # picks the settings class itself (config.setup)
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else field_name.upper())
    return names


@pytest.mark.parametrize("name", ["ApiFunction", "MigrationFunction", "WorkerFunction"])
def test_every_environment_variable_is_a_setting_and_none_is_a_secret(name: str) -> None:
    variables = functions()[name]["Properties"]["Environment"]["Variables"]
    assert set(variables) <= setting_names(), set(variables) - setting_names()
    # Secrets are named by their ARN, read at start-up; never a value here.
    assert not {"SECRET_KEY", "DATABASE_URL", "POSTGRES_PASSWORD"} & set(variables)
    assert set(variables) >= {"SECRET_KEY_SECRET_ID", "DATABASE_SECRET_ID", "POSTGRES_HOST"}
    assert variables["POSTGRES_SSLMODE"] == "require"


def test_no_parameter_carries_a_secret() -> None:
    for name, parameter in template()["Parameters"].items():
        # A parameter that would hold one: a password, a key, a token.
        assert not name.lower().endswith(("password", "secret", "key", "token")), name
        assert parameter.get("NoEcho") is not True, name


@pytest.mark.parametrize("name", ["ApiFunction", "WorkerFunction"])
def test_request_functions_go_through_the_proxy_without_connection_options(name: str) -> None:
    variables = functions()[name]["Properties"]["Environment"]["Variables"]
    assert variables["POSTGRES_HOST"] == {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]}
    assert variables["DB_NULL_POOL"] == "true"
    assert variables["DB_CONNECTION_OPTIONS"] == "false"
    proxy = template()["Resources"]["DatabaseProxy"]["Properties"]
    assert proxy["RequireTLS"] is True
    assert [auth["AuthScheme"] for auth in proxy["Auth"]] == ["SECRETS"]


def test_the_api_takes_every_method_on_every_path() -> None:
    events = functions()["ApiFunction"]["Properties"]["Events"].values()
    routes = {(event["Properties"]["Method"], event["Properties"]["Path"]) for event in events}
    assert routes == {("ANY", "/"), ("ANY", "/{proxy+}")}
    assert all(event["Type"] == "HttpApi" for event in events)


def schedules() -> list[dict[str, Any]]:
    return [
        event["Properties"]
        for function in functions().values()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] in {"ScheduleV2", "Schedule"}
    ]


def test_every_schedule_names_a_registered_task_the_handler_dispatches() -> None:
    assert schedules()
    for schedule in schedules():
        event = json.loads(schedule["Input"])
        assert event_kind(event) == "schedule"
        assert scheduled_task_name(event, list(SCHEDULED_TASKS)) in SCHEDULED_TASKS


def test_the_migrations_run_on_every_new_image() -> None:
    migrations = template()["Resources"]["Migrations"]
    assert migrations["Type"] == "Custom::Migrations"
    properties = migrations["Properties"]
    assert properties["ServiceToken"] == {"Fn::GetAtt": ["MigrationFunction", "Arn"]}
    # A new version per new image: each deploy of one is an Update that migrates.
    assert properties["FunctionVersion"] == {"Ref": "MigrationFunction.Version"}
    assert "AutoPublishAlias" in functions()["MigrationFunction"]["Properties"]
    # The new API code takes over only once its migrations succeeded.
    assert "Migrations" in functions()["ApiFunction"]["DependsOn"]
    assert "Migrations" in functions()["WorkerFunction"]["DependsOn"]


def test_every_log_group_has_a_retention_and_every_function_writes_its_own() -> None:
    groups = resources("AWS::Logs::LogGroup")
    assert all("RetentionInDays" in group["Properties"] for group in groups.values())
    used = [
        function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        for function in functions().values()
    ]
    assert len(set(used)) == len(used)
    assert set(used) <= set(groups)


def statements() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, role in resources("AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            found += [(name, statement) for statement in policy["PolicyDocument"]["Statement"]]
    for name, policy in resources("AWS::IAM::ManagedPolicy").items():
        found += [
            (name, statement) for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]
    return found


def test_iam_grants_named_actions_on_named_resources() -> None:
    assert statements()
    for name, statement in statements():
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        assert all("*" not in action for action in actions), (name, actions)
        if statement["Resource"] == "*":
            # Lambda manages the network interfaces of functions in a VPC on any resource.
            assert all(action.startswith("ec2:") for action in actions), (name, actions)


def test_each_function_role_reads_only_its_secrets_and_its_log_group() -> None:
    for function in functions().values():
        role_name = function["Properties"]["Role"]["Fn::GetAtt"][0]
        role = template()["Resources"][role_name]
        [policy] = role["Properties"]["Policies"]
        granted = {
            action: statement["Resource"]
            for statement in policy["PolicyDocument"]["Statement"]
            for action in (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
        }
        assert set(granted) == {
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "secretsmanager:GetSecretValue",
        }
        log_group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert granted["logs:PutLogEvents"] == {"Fn::GetAtt": [log_group, "Arn"]}


def test_the_database_is_aurora_serverless_v2_postgresql_16_with_a_managed_secret() -> None:
    cluster = template()["Resources"]["DatabaseCluster"]
    properties = cluster["Properties"]
    assert properties["Engine"] == "aurora-postgresql"
    assert template()["Parameters"]["DatabaseEngineVersion"]["Default"].startswith("16.")
    assert properties["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in properties
    assert "ServerlessV2ScalingConfiguration" in properties
    assert properties["StorageEncrypted"] is True
    assert cluster["DeletionPolicy"] == "Snapshot"
    instance = template()["Resources"]["DatabaseInstance"]["Properties"]
    assert instance["DBInstanceClass"] == "db.serverless"


def test_the_api_url_is_an_output() -> None:
    assert "execute-api" in template()["Outputs"]["ApiUrl"]["Value"]["Fn::Sub"]


def test_the_image_compiles_the_code_it_copies() -> None:
    # Lambda's file system is read-only: bytecode not built into the image is compiled again
    # at every cold start.
    dockerfile = root_path("Dockerfile").read_text().replace("\\\n", " ")
    [compile_line] = [line for line in dockerfile.splitlines() if "compileall" in line]
    for copied in ("app", "config", "alembic", "root.py"):
        assert f"${{LAMBDA_TASK_ROOT}}/{copied}" in compile_line


def rate(expression: str) -> timedelta:
    """An EventBridge Scheduler `rate(N unit)` expression as a duration."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression)
    assert match, expression
    unit = match.group(2).rstrip("s") + "s"
    return timedelta(**{unit: int(match.group(1))})


def test_each_schedule_runs_its_task_at_the_cadence_the_registry_states() -> None:
    parameters = template()["Parameters"]
    scheduled = {}
    for schedule in schedules():
        name = json.loads(schedule["Input"])["task"]
        scheduled[name] = rate(parameters[schedule["ScheduleExpression"]["Ref"]]["Default"])
    assert scheduled == {
        name: task.cadence for name, task in SCHEDULED_TASKS.items() if task.cadence is not None
    }


def alarms() -> dict[str, dict[str, Any]]:
    return {
        name: alarm["Properties"] for name, alarm in resources("AWS::CloudWatch::Alarm").items()
    }


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or those of its metric math."""
    if "MetricName" in alarm:
        return [alarm]
    return [query["MetricStat"]["Metric"] for query in alarm["Metrics"] if "MetricStat" in query]


# What AWS publishes that the alarms read, by namespace and name, with its dimension.
AWS_METRICS = {
    ("AWS/ApiGateway", "5xx"): "ApiId",
    ("AWS/ApiGateway", "Count"): "ApiId",
    ("AWS/Lambda", "Errors"): "FunctionName",
    ("AWS/Lambda", "Throttles"): "FunctionName",
    ("AWS/RDS", "ACUUtilization"): "DBClusterIdentifier",
    ("AWS/RDS", "DatabaseConnectionsCurrentlySessionPinned"): "ProxyName",
}


def test_every_alarm_reads_a_metric_the_app_emits_or_aws_publishes_and_notifies_the_topic() -> None:
    assert alarms()
    for name, alarm in alarms().items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm_metrics(alarm), name
        for metric in alarm_metrics(alarm):
            dimensions = {each["Name"] for each in metric["Dimensions"]}
            if metric["Namespace"] == metrics.NAMESPACE:
                emitted = metrics.CATALOGUE[metric["MetricName"]]
                # EMF publishes a metric under its dimension set exactly: the alarm names it.
                assert dimensions == {"Service", *emitted.dimensions}, name
                service = next(each for each in metric["Dimensions"] if each["Name"] == "Service")
                assert service["Value"] == {"Ref": "AWS::StackName"}, name
            else:
                assert {AWS_METRICS[(metric["Namespace"], metric["MetricName"])]} == dimensions


def test_the_metrics_dimension_is_the_stack_in_every_function() -> None:
    for function in functions().values():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["METRICS_SERVICE"] == {"Ref": "AWS::StackName"}


def test_each_task_alarms_without_a_success_within_twice_its_cadence() -> None:
    by_task = {
        dimension["Value"]: alarm
        for alarm in alarms().values()
        if alarm.get("MetricName") == metrics.TASK_RUNS.name
        for dimension in alarm["Dimensions"]
        if dimension["Name"] == "Task"
    }
    cadences = {name: task.cadence for name, task in SCHEDULED_TASKS.items() if task.cadence}
    assert set(by_task) == set(cadences)
    for name, alarm in by_task.items():
        assert alarm["Period"] == 2 * cadences[name].total_seconds()
        assert {"Name": "Outcome", "Value": "succeeded"} in alarm["Dimensions"]
        assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
        assert alarm["ComparisonOperator"] == "LessThanThreshold"
        assert alarm["TreatMissingData"] == "breaching"


def test_the_pinned_connections_alarm_counts_connections_not_minutes_of_them() -> None:
    # The proxy's nodes each report the gauge every minute: a Sum over a minute adds the nodes,
    # a Sum over longer adds the minutes too.
    alarm = alarms()["ProxyPinnedConnectionsAlarm"]
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", 60, 10)
    assert alarm["Period"] * alarm["EvaluationPeriods"] == 15 * 60


def test_the_dashboard_shows_every_alarm_and_is_json() -> None:
    [dashboard] = resources("AWS::CloudWatch::Dashboard").values()
    body, variables = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    shown = {item["Fn::Sub"] for item in variables["Alarms"]["Fn::Join"][1]}
    assert shown == {f'"${{{name}.Arn}}"' for name in alarms()}
    filled = re.sub(r"\$\{Alarms\}", '"arn:alarm"', body)
    document = json.loads(re.sub(r"\$\{[^}]+\}", "value", filled))
    assert document["widgets"]


def test_alarms_go_to_an_e_mail_address_only_when_one_is_given() -> None:
    subscription = template()["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "SubscribeAlarmEmail"
    assert template()["Parameters"]["AlarmEmail"]["Default"] == ""


def test_snapstart_is_a_parameter_of_the_api_function_on_its_published_versions() -> None:
    parameter = template()["Parameters"]["ApiSnapStart"]
    assert parameter["Default"] == "false"
    assert parameter["AllowedValues"] == ["true", "false"]
    assert template()["Conditions"]["UseApiSnapStart"] == {
        "Fn::Equals": [{"Ref": "ApiSnapStart"}, "true"]
    }
    api = functions()["ApiFunction"]["Properties"]
    assert api["AutoPublishAlias"] == "live"
    assert api["SnapStart"] == {
        "Fn::If": ["UseApiSnapStart", {"ApplyOn": "PublishedVersions"}, {"Ref": "AWS::NoValue"}]
    }
    # The functions without HTTP start rarely, and run longer than any init.
    for name in ("MigrationFunction", "WorkerFunction"):
        assert "SnapStart" not in functions()[name]["Properties"]


def test_the_worker_reaches_the_webhook_ports_the_api_accepts() -> None:
    """WEBHOOK_ALLOWED_PORTS and the functions' egress come from one parameter: 443, and the
    extra port when one is given."""
    resources_ = template()["Resources"]
    group = resources_["FunctionSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    assert [(rule["FromPort"], rule["ToPort"], rule["CidrIp"]) for rule in group] == [
        (443, 443, "0.0.0.0/0")
    ]
    extra = resources_["FunctionToWebhookExtraPortEgress"]
    assert extra["Condition"] == "WebhookExtraPortAllowed"
    assert extra["Properties"]["GroupId"] == {"Ref": "FunctionSecurityGroup"}
    port = {"Ref": "WebhookExtraPort"}
    assert (extra["Properties"]["FromPort"], extra["Properties"]["ToPort"]) == (port, port)
    for name in ("ApiFunction", "WorkerFunction"):
        variables = functions()[name]["Properties"]["Environment"]["Variables"]
        assert variables["WEBHOOK_ALLOWED_PORTS"] == {
            "Fn::If": ["WebhookExtraPortAllowed", {"Fn::Sub": "443,${WebhookExtraPort}"}, "443"]
        }
        assert variables["WEBHOOK_SECRET_KEYS_SECRET_ID"] == {"Ref": "WebhookSecretKeysSecret"}
    assert Settings(webhook_allowed_ports="443,8443").webhook_allowed_ports == [443, 8443]  # type: ignore[arg-type]
