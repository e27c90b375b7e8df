"""template.yaml's network and schedule hold to what the code needs: each function in its own
security group alone, everything the functions call reachable without a NAT gateway, and the
cleanup scheduled often enough to keep up with what the API can write."""

import re

import pytest

from app.deploy import RESPONSE_URL_HOST_SUFFIXES
from config.settings import Settings
from tests.deployment.test_template import functions, template

SECURITY_GROUPS = {
    "ApiFunction": "FunctionSecurityGroup",
    "WorkerFunction": "FunctionSecurityGroup",
    "MigrationFunction": "MigrationSecurityGroup",
}


def test_no_global_vpc_config_that_sam_would_add_to_each_function_own() -> None:
    assert "VpcConfig" not in template()["Globals"]["Function"]


@pytest.mark.parametrize(("name", "group"), SECURITY_GROUPS.items())
def test_each_function_is_in_the_private_subnets_with_its_security_group_alone(
    name: str, group: str
) -> None:
    vpc_config = functions()[name]["Properties"]["VpcConfig"]
    assert vpc_config["SubnetIds"] == {"Ref": "PrivateSubnetIds"}
    assert vpc_config["SecurityGroupIds"] == [{"Ref": group}]


def endpoints() -> dict[str, dict[str, object]]:
    return {
        name: resource
        for name, resource in template()["Resources"].items()
        if resource["Type"] == "AWS::EC2::VPCEndpoint"
    }


def service(endpoint: dict[str, object]) -> str:
    properties = endpoint["Properties"]
    assert isinstance(properties, dict)
    name = properties["ServiceName"]["Fn::Sub"]
    assert isinstance(name, str)
    return name.removeprefix("com.amazonaws.${AWS::Region}.")


def test_the_functions_reach_secrets_manager_and_s3_without_a_nat_gateway() -> None:
    by_service = {service(endpoint): endpoint for endpoint in endpoints().values()}
    assert set(by_service) == {"secretsmanager", "s3"}
    # Created together, or not at all (a VPC with a NAT gateway needs neither).
    assert {endpoint["Condition"] for endpoint in by_service.values()} == {"CreateEndpoints"}
    s3 = by_service["s3"]["Properties"]
    assert isinstance(s3, dict)
    assert s3["VpcEndpointType"] == "Gateway"
    assert s3["RouteTableIds"] == {"Ref": "PrivateRouteTableIds"}
    # The custom resource's answer goes to an S3 presigned URL, on a host the code accepts.
    assert any("s3.amazonaws.com".endswith(suffix) for suffix in RESPONSE_URL_HOST_SUFFIXES)


def test_creating_the_endpoints_requires_the_route_tables() -> None:
    [rule] = template()["Rules"].values()
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "CreateVpcEndpoints"}, "true"]}
    assert "PrivateRouteTableIds" in str(rule["Assertions"])


def test_the_cleanup_can_delete_more_login_failures_than_the_api_can_record() -> None:
    # One failed login per request at the HTTP API's throttle, each a row: a run must be able
    # to delete what arrives between two runs, with room to catch up.
    [schedule] = [
        event["Properties"]
        for event in functions()["WorkerFunction"]["Properties"]["Events"].values()
        if '"auth_cleanup"' in event["Properties"]["Input"]
    ]
    default = template()["Parameters"][schedule["ScheduleExpression"]["Ref"]]["Default"]
    match = re.fullmatch(r"rate\((\d+) minutes?\)", default)
    assert match, default
    minutes = int(match[1])
    requests_per_second = template()["Resources"]["HttpApi"]["Properties"]["DefaultRouteSettings"][
        "ThrottlingRateLimit"
    ]
    fields = Settings.model_fields
    per_run = fields["task_batch_size"].default * fields["task_max_batches"].default
    assert per_run >= 2 * requests_per_second * 60 * minutes
