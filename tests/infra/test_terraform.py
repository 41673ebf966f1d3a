"""infra/terraform, checked without Terraform: it parses, its references resolve, checkov
finds nothing, IAM names its resources, and it still does what the app and the notifier
expect (table key, TTL and stream, handler, settings, Kafka security).

`terraform validate/plan` need a provider registry, which this machine cannot reach.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from app.cases.model import STATUS_INDEX
from app.worker.settings import PREFIX, VARIABLES
from infra.checks import checkov
from infra.checks.terraform_refs import check_tree, load_module
from lambdas.notifier.models.env import VARIABLES as NOTIFIER_VARIABLES
from lambdas.notifier.models.env import NotifierConfig
from lambdas.slack_actions import guard
from lambdas.slack_actions.config import ActionsConfig

TERRAFORM = Path(__file__).resolve().parents[2] / "infra" / "terraform"
TF_FILES = sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)
_OPTIONS = hcl2.SerializationOptions(with_comments=False, preserve_heredocs=False)

# Every Allow statement whose action or resource is a bare "*" (or an action wildcard),
# with the reason AWS leaves no choice. Anything else with "*" fails the test.
WILDCARDS_AWS_REQUIRES = {
    ("modules/kms/main.tf", "AccountAdministersTheKeyThroughIam"): "default key policy",
    ("modules/kms/main.tf", "CloudWatchLogsEncryptsThisStacksLogGroups"): "key policy: *=key",
    ("modules/kms/main.tf", "CloudWatchAlarmsPublishToEncryptedTopics"): "key policy: *=key",
    ("modules/workers/main.tf", "EcrLogin"): "no resource-level permission",
}
# Statements whose principal is "*": denials, and VPC endpoint policies (which restrict
# resources, for whichever principal uses the endpoint).
PRINCIPAL_WILDCARDS = {
    ("modules/archive/main.tf", "DenyPlainHttp"),
    ("modules/archive/main.tf", "DenyTlsOlderThan12"),
    ("modules/network/main.tf", "ThisStacksArchiveBucket"),
    ("modules/network/main.tf", "EcrImageLayers"),
    ("modules/network/main.tf", "ThisStacksAlertsTable"),
}


@cache
def parsed(relative: str) -> dict[str, Any]:
    result: dict[str, Any] = hcl2.loads(
        (TERRAFORM / relative).read_text(), serialization_options=_OPTIONS
    )
    return result


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def blocks(relative: str, kind: str, type_: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, body)`` of every ``kind "type_" "name"`` block of a file."""
    for block in parsed(relative).get(kind, []):
        for found_type, named in block.items():
            if unquote(found_type) == type_:
                for name, body in named.items():
                    if not name.startswith("__"):
                        yield unquote(name), body


def block(relative: str, kind: str, type_: str, name: str) -> dict[str, Any]:
    found = dict(blocks(relative, kind, type_))
    assert name in found, f"{kind} {type_}.{name} not in {relative}"
    return found[name]


def blocks_of(relative: str, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, body)`` of every ``kind "name"`` block of a file (output, variable)."""
    for found in parsed(relative).get(kind, []):
        for name, body in found.items():
            if not name.startswith("__"):
                yield unquote(name), body


def only(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The single nested block ``key`` of ``body``."""
    (nested,) = body[key]
    assert isinstance(nested, dict)
    return nested


# --- parsing, references, checkov --------------------------------------------------------


def test_the_tree_has_every_module_and_root_file() -> None:
    names = {str(p.relative_to(TERRAFORM)) for p in TF_FILES}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names
    modules = (
        "network",
        "kafka",
        "workers",
        "alerts",
        "cases",
        "archive",
        "notifier",
        "monitoring",
        "web",
        "slack_actions",
    )
    for module in modules:
        assert {f"modules/{module}/{f}.tf" for f in ("main", "variables", "outputs")} <= names
    assert (TERRAFORM / "terraform.tfvars.example").is_file()


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses_with_python_hcl2(path: Path) -> None:
    assert isinstance(hcl2.loads(path.read_text()), dict)


def test_the_tfvars_example_parses_and_sets_only_declared_variables() -> None:
    text = (TERRAFORM / "terraform.tfvars.example").read_text()
    example = hcl2.loads(text, serialization_options=_OPTIONS)
    declared = {unquote(name) for block in parsed("variables.tf")["variable"] for name in block}
    assert {name for name in example if not name.startswith("__")} <= declared


def test_every_reference_resolves() -> None:
    assert [str(p) for p in check_tree(TERRAFORM)] == []


@pytest.fixture(scope="session")
def checkov_executable() -> Path:
    """The pinned checkov, installed into its own venv on first use (like the test
    suite's other tools, under ~/.cache/fraud-detection)."""
    return checkov.find_checkov() or checkov.install()


def test_checkov_finds_no_failed_check(checkov_executable: Path) -> None:
    report = checkov.run(TERRAFORM, checkov_executable)
    assert report.parsing_errors == 0
    assert report.passed > 150, "checkov looked at too little: were the modules scanned?"
    assert report.failed == 0, "\n".join(str(f) for f in report.failures)


def test_checkov_fails_what_it_should(tmp_path: Path, checkov_executable: Path) -> None:
    # The same run on an unencrypted SNS topic: proves a failure would be seen.
    (tmp_path / "main.tf").write_text('resource "aws_sns_topic" "plain" {\n  name = "plain"\n}\n')
    report = checkov.run(tmp_path, checkov_executable)
    assert "CKV_AWS_26" in {failure.check_id for failure in report.failures}
    assert report.failed == len(report.failures) >= 1


def test_every_checkov_skip_is_argued_inline() -> None:
    skip = re.compile(r"#\s*checkov:skip=([^\s:]+)(?::(.*))?")
    found = 0
    for path in TF_FILES:
        for match in skip.finditer(path.read_text()):
            found += 1
            assert re.fullmatch(r"CKV2?_AWS_\d+", match[1]), match[0]
            reason = (match[2] or "").strip()
            assert len(reason) >= 40, f"{path.name}: {match[1]} needs a reason, not {reason!r}"
    assert found > 0


def test_checkov_reports_are_read_whatever_their_shape() -> None:
    one = {
        "check_type": "terraform",
        "summary": {"passed": 3, "failed": 1, "skipped": 2, "parsing_errors": 0},
        "results": {
            "failed_checks": [
                {
                    "check_id": "CKV_AWS_26",
                    "check_name": "SNS encrypted",
                    "resource": "aws_sns_topic.plain",
                    "file_path": "/main.tf",
                    "file_line_range": [1, 3],
                }
            ],
            "skipped_checks": [{"check_id": "CKV_AWS_18"}, {"check_id": "CKV_AWS_144"}],
        },
    }
    empty = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0, "resource_count": 0}
    report = checkov.parse_report(json.dumps([one, {"summary": empty}]))
    assert (report.passed, report.failed, report.skipped) == (3, 1, 2)
    assert str(report.failures[0]) == "CKV_AWS_26 aws_sns_topic.plain (/main.tf:1-3): SNS encrypted"
    assert report.skipped_ids == ("CKV_AWS_18", "CKV_AWS_144")
    with pytest.raises(checkov.CheckovError, match="no JSON"):
        checkov.parse_report("Traceback (most recent call last): ...")
    one["summary"]["failed"] = 2  # type: ignore[index]
    with pytest.raises(checkov.CheckovError, match="says 2 failed but lists 1"):
        checkov.parse_report(json.dumps(one))


# --- least privilege ---------------------------------------------------------------------


def policy_statements() -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file, statement)`` of every statement of every aws_iam_policy_document, the
    bodies of dynamic statements included."""
    for path in TF_FILES:
        relative = str(path.relative_to(TERRAFORM))
        for _name, body in blocks(relative, "data", "aws_iam_policy_document"):
            yield from ((relative, s) for s in body.get("statement", []))
            for dynamic in body.get("dynamic", []):
                for label, content in dynamic.items():
                    if unquote(label) == "statement":
                        yield from ((relative, s) for s in content["content"])


def test_every_allow_statement_names_its_resources() -> None:
    wildcards = set()
    for file, statement in policy_statements():
        sid = unquote(statement.get("sid", '""'))
        if unquote(statement.get("effect", '"Allow"')) == "Deny":
            continue
        actions = [unquote(a) for a in statement.get("actions", [])]
        if actions == ["sts:AssumeRole"]:
            continue  # a trust policy: its principal, not a resource, is what it names
        resources = [unquote(r) for r in statement.get("resources", [])]
        assert actions and resources, f"{file} {sid}: actions and resources must be named"
        if any("*" in a for a in actions) or "*" in resources:
            wildcards.add((file, sid))
    assert wildcards == set(WILDCARDS_AWS_REQUIRES)


def test_only_denials_and_endpoint_policies_have_every_principal() -> None:
    found = set()
    for file, statement in policy_statements():
        for principal in statement.get("principals", []):
            if "*" in [unquote(i) for i in principal["identifiers"]]:
                found.add((file, unquote(statement["sid"])))
    assert found == PRINCIPAL_WILDCARDS


def test_only_the_workers_security_group_reaches_the_brokers() -> None:
    network = "modules/network/main.tf"
    groups = dict(blocks(network, "resource", "aws_security_group"))
    assert all("ingress" not in g and "egress" not in g for g in groups.values())
    into_msk = [
        rule
        for _name, rule in blocks(network, "resource", "aws_vpc_security_group_ingress_rule")
        if rule["security_group_id"] == "${aws_security_group.msk.id}"
    ]
    assert len(into_msk) == 1
    (rule,) = into_msk
    assert rule["referenced_security_group_id"] == "${aws_security_group.workers.id}"
    assert not {"cidr_ipv4", "cidr_ipv6", "prefix_list_id"} & set(rule)
    # ... and that group is the brokers' one.
    kafka = block("modules/kafka/main.tf", "resource", "aws_msk_cluster", "this")
    node_group = only(kafka, "broker_node_group_info")
    assert node_group["security_groups"] == ["${var.security_group_id}"]
    root_call = parsed("main.tf")["module"]
    kafka_call = next(b['"kafka"'] for b in root_call if '"kafka"' in b)
    assert kafka_call["security_group_id"] == "${module.network.msk_security_group_id}"


# --- what the app and the notifier rely on ----------------------------------------------


def test_msk_uses_tls_and_iam_and_encrypts_and_logs() -> None:
    kafka = block("modules/kafka/main.tf", "resource", "aws_msk_cluster", "this")
    encryption = only(kafka, "encryption_info")
    assert unquote(only(encryption, "encryption_in_transit")["client_broker"]) == "TLS"
    assert only(encryption, "encryption_in_transit")["in_cluster"] is True
    assert encryption["encryption_at_rest_kms_key_arn"] == "${var.kms_key_arn}"
    auth = only(kafka, "client_authentication")
    assert auth["unauthenticated"] is False
    assert only(auth, "sasl") == {"iam": True, "scram": False, "__is_block__": True}
    logs = only(only(only(kafka, "logging_info"), "broker_logs"), "cloudwatch_logs")
    assert logs["enabled"] is True
    config = block("modules/kafka/main.tf", "resource", "aws_msk_configuration", "this")
    assert "auto.create.topics.enable=false" in config["server_properties"]


def test_the_workers_get_only_settings_the_app_knows() -> None:
    text = (TERRAFORM / "modules/workers/main.tf").read_text()
    set_here = set(re.findall(r"^\s*(FRAUD_[A-Z0-9_]+)\s*=", text, re.MULTILINE))
    known = {PREFIX + name for name, _attr, _parse in VARIABLES}
    assert set_here, "no FRAUD_* setting found in the workers' task definition"
    assert set_here <= known, f"not settings of app/worker/settings.py: {set_here - known}"
    kafka = parsed("modules/workers/main.tf")["locals"][0]["kafka_environment"]
    assert unquote(kafka["FRAUD_KAFKA_SECURITY_PROTOCOL"]) == "SASL_SSL"
    assert unquote(kafka["FRAUD_KAFKA_SASL_MECHANISM"]) == "AWS_MSK_IAM"
    for needed in ("BROKER", "DYNAMODB_TABLE", "AWS_REGION", "ARCHIVE_URL", "PARTITIONS"):
        assert PREFIX + needed in set_here


def test_the_alerts_table_keeps_its_key_ttl_and_stream() -> None:
    table = block("modules/alerts/main.tf", "resource", "aws_dynamodb_table", "alerts")
    assert unquote(table["hash_key"]) == "alert_id"
    ttl = only(table, "ttl")
    assert (unquote(ttl["attribute_name"]), ttl["enabled"]) == ("expires_at", True)
    assert table["stream_enabled"] is True
    assert unquote(table["stream_view_type"]) == "NEW_IMAGE"
    root = next(b['"alerts"'] for b in parsed("main.tf")["module"] if '"alerts"' in b)
    assert unquote(root["table_name"]) == "${var.name}_alerts"  # fraud_alerts, the app's default


def test_the_cases_table_keeps_its_key_and_status_index_and_no_ttl() -> None:
    table = block("modules/cases/main.tf", "resource", "aws_dynamodb_table", "cases")
    assert unquote(table["hash_key"]) == "pk" and "ttl" not in table
    index = only(table, "global_secondary_index")
    assert (unquote(index["name"]), unquote(index["hash_key"]), unquote(index["range_key"])) == (
        STATUS_INDEX,
        "status",
        "opened_at",
    )
    root = next(b['"cases"'] for b in parsed("main.tf")["module"] if '"cases"' in b)
    assert unquote(root["table_name"]) == "${var.name}_cases"  # fraud_cases, the app's default
    workers = block("modules/workers/main.tf", "data", "aws_iam_policy_document", "task")
    text = str(workers)
    assert "dynamodb:ConditionCheckItem" in text and "/index/by_status" in text


def test_the_notifier_keeps_its_handler_environment_and_batch_failures() -> None:
    notifier = "modules/notifier/main.tf"
    function = block(notifier, "resource", "aws_lambda_function", "notifier")
    assert unquote(function["handler"]) == "lambdas.notifier.handlers.notify.handler"
    assert unquote(function["runtime"]) == "python3.11"
    (environment,) = function["environment"]
    keys = set(re.findall(r'"?\b([A-Z][A-Z0-9_]{2,})"?\s*(?:=>|=)', environment["variables"]))
    known = {variable.name for variable in NOTIFIER_VARIABLES} | {"POWERTOOLS_SERVICE_NAME"}
    assert {"SNS_TOPIC_ARN", "IDEMPOTENCY_TABLE", "SLACK_WEBHOOK_SECRET_ARN", "CASES_TABLE"} <= keys
    assert keys <= known
    mapping = block(notifier, "resource", "aws_lambda_event_source_mapping", "alerts_stream")
    assert [unquote(t) for t in mapping["function_response_types"]] == ["ReportBatchItemFailures"]
    on_failure = only(only(mapping, "destination_config"), "on_failure")
    assert on_failure["destination_arn"] == "${aws_sqs_queue.failures.arn}"
    assert "INSERT" in only(only(mapping, "filter_criteria"), "filter")["pattern"]
    # The webhook secret is created without a value: no aws_secretsmanager_secret_version.
    assert not list(blocks(notifier, "resource", "aws_secretsmanager_secret_version"))


def test_the_archive_bucket_is_private_versioned_encrypted_and_tiered() -> None:
    archive = "modules/archive/main.tf"
    public = block(archive, "resource", "aws_s3_bucket_public_access_block", "archive")
    assert all(
        public[k] is True for k in public if k.startswith(("block_", "ignore_", "restrict_"))
    )
    versioning = block(archive, "resource", "aws_s3_bucket_versioning", "archive")
    assert unquote(only(versioning, "versioning_configuration")["status"]) == "Enabled"
    lifecycle = block(archive, "resource", "aws_s3_bucket_lifecycle_configuration", "archive")
    tiering = next(r for r in lifecycle["rule"] if unquote(r["id"]) == "archive-tiering")
    classes = [unquote(t["storage_class"]) for t in tiering["transition"]]
    assert classes == ["STANDARD_IA", "GLACIER_IR"]
    denials = {
        unquote(s["sid"]) for f, s in policy_statements() if f == archive and "condition" in s
    }
    assert denials == {"DenyPlainHttp", "DenyTlsOlderThan12"}


def test_desired_count_is_validated_against_the_partitions() -> None:
    desired = next(
        body
        for block in parsed("variables.tf")["variable"]
        for name, body in block.items()
        if unquote(name) == "desired_count"
    )
    (validation,) = desired["validation"]
    assert "var.desired_count <= var.partitions" in validation["condition"]
    target = block("modules/workers/main.tf", "resource", "aws_appautoscaling_target", "workers")
    assert target["max_capacity"] == "${local.max_count}"


def test_the_log_metric_filters_match_what_the_workers_log() -> None:
    # Sink failures, internal errors and crashes reach CloudWatch through metric filters on
    # the log text: a reworded log call would silence an alarm without this.
    repo = TERRAFORM.parents[1]
    source = "".join(
        (repo / f).read_text()
        for f in ("agents/sink.py", "app/delivery/alert_writer.py", "app/worker/failures.py")
    )
    log_metrics = parsed("modules/monitoring/main.tf")["locals"][0]["log_metrics"]
    assert set(log_metrics) == {"SinkFailures", "InternalErrors", "AgentCrashes"}
    for name, pattern in log_metrics.items():
        phrases = re.findall(r'\\"(.+?)\\"', pattern)
        assert phrases, f"{name}: no quoted phrase in {pattern!r}"
        for phrase in phrases:
            assert phrase in source, f"{name}: {phrase!r} is no longer logged"


# --- the region: set once, read back everywhere -----------------------------------------


def test_the_region_is_set_only_in_the_provider() -> None:
    root = load_module(TERRAFORM)
    assert {ref.where for ref in root.references if ref.address() == "var.region"} == {"provider"}
    (provider,) = parsed("main.tf")["provider"]
    assert provider['"aws"']["region"] == "${var.region}"
    # Every module reads the provider's region back; none takes one as a variable.
    for path in sorted(TERRAFORM.glob("modules/*")):
        module = load_module(path)
        assert not {"region", "aws_region"} & set(module.variables), path.name
        for local in parsed(f"modules/{path.name}/main.tf").get("locals", []):
            if "region" in local:
                assert local["region"] == "${data.aws_region.current.name}", path.name
    assert parsed("main.tf")["locals"][0]["region"] == "${data.aws_region.current.name}"


def test_the_workers_region_settings_and_commands_are_the_providers() -> None:
    workers = parsed("modules/workers/main.tf")
    local = workers["locals"][0]
    assert local["kafka_environment"]["FRAUD_AWS_REGION"] == "${local.region}"
    assert local["kafka_environment"]["AWS_REGION"] == "${local.region}"
    assert local["log_configuration"]["options"]["awslogs-region"] == "${local.region}"
    # Every AWS CLI command the stack prints names the region, so the shell's does not count:
    # the root forwards the modules' commands, which name it or are built on run_admin_task.
    (run_admin_task,) = (lc["run_admin_task"] for lc in workers["locals"] if "run_admin_task" in lc)
    assert '"--region ${local.region}"' in run_admin_task
    commands = {
        f"{path}:{name}": str(body["value"])
        for path in [str(p.relative_to(TERRAFORM)) for p in TF_FILES if p.name == "outputs.tf"]
        for name, body in blocks_of(path, "output")
        if name.endswith("_command")
    }
    assert len(commands) >= 6, commands
    for where, value in commands.items():
        if where.startswith("outputs.tf:"):
            # A module's command as is, or the one instance's of an optional module.
            forwarded = r"\$\{(module\.\w+\.\w+_command|one\(module\.\w+\[\*\]\.\w+_command\))\}"
            assert re.fullmatch(forwarded, value), where
        else:
            assert "--region ${local.region}" in value or "local.run_admin_task" in value, where


def test_a_worker_image_of_another_region_is_refused_at_plan() -> None:
    task = block("modules/workers/main.tf", "resource", "aws_ecs_task_definition", "worker")
    (lifecycle,) = task["lifecycle"]
    conditions = [p["condition"] for p in lifecycle["precondition"]]
    assert "${local.ecr[1] == local.region}" in conditions
    # local.ecr[1] is the region part of the image URI.
    ecr = parsed("modules/workers/main.tf")["locals"][0]["ecr"]
    pattern = re.search(r'regex\("(.+?)", var\.image\)', ecr)
    assert pattern is not None
    uri = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/fraud-detection:0.1.0"
    match = re.match(pattern[1].replace("\\\\", "\\"), uri)
    assert match is not None and match[2] == "eu-central-1"


# --- rules of your own on AWS: a file from S3 --------------------------------------------


def policy_document(relative: str, name: str) -> dict[str, dict[str, Any]]:
    """The statements of one aws_iam_policy_document, by sid."""
    body = block(relative, "data", "aws_iam_policy_document", name)
    return {unquote(s["sid"]): s for s in body.get("statement", [])}


def test_the_put_rules_task_may_read_the_rules_prefix_and_nothing_else_of_s3() -> None:
    admin = policy_document("modules/workers/main.tf", "admin")
    s3 = {sid: s for sid, s in admin.items() if any(a.startswith('"s3:') for a in s["actions"])}
    assert list(s3) == ["ReadRuleFiles"]
    assert s3["ReadRuleFiles"]["actions"] == ['"s3:GetObject"']
    assert s3["ReadRuleFiles"]["resources"] == ['"${var.archive_bucket_arn}/${var.rules_prefix}/*"']
    decrypt = admin["DecryptRuleFilesThroughS3"]
    assert decrypt["actions"] == ['"kms:Decrypt"']
    (condition,) = decrypt["condition"]
    assert condition["values"] == ['"s3.${local.region}.amazonaws.com"']
    # The workers read and write the archive's prefix only, and the two prefixes are apart.
    task = policy_document("modules/workers/main.tf", "task")
    objects = [
        unquote(r)
        for s in task.values()
        if any(a.startswith('"s3:') for a in s["actions"])
        for r in s["resources"]
        if "/" in unquote(r)
    ]
    assert objects == ["${var.archive_bucket_arn}/${var.archive_prefix}/*"]
    rules_prefix = next(
        b for name, b in blocks_of("variables.tf", "variable") if name == "rules_prefix"
    )
    (validation,) = rules_prefix["validation"]
    assert (
        '!startswith("${var.rules_prefix}/", "${var.archive_prefix}/")' in validation["condition"]
    )
    assert (
        '!startswith("${var.archive_prefix}/", "${var.rules_prefix}/")' in validation["condition"]
    )


def test_the_put_rules_task_runs_put_rules_py_with_the_prefix() -> None:
    workers = parsed("modules/workers/main.tf")
    (containers,) = (lc["admin_containers"] for lc in workers["locals"] if "admin_containers" in lc)
    put_rules = containers["put-rules"]
    assert 'name = "put-rules"' in put_rules
    assert 'entryPoint = ["python", "-c"]' in put_rules
    assert "command = [var.put_rules_script]" in put_rules
    assert "RULES_S3_PREFIX = local.rules_s3_prefix" in put_rules
    (prefix,) = (lc["rules_s3_prefix"] for lc in workers["locals"] if "rules_s3_prefix" in lc)
    assert unquote(prefix) == "s3://${var.archive_bucket}/${var.rules_prefix}/"
    call = next(b['"workers"'] for b in parsed("main.tf")["module"] if '"workers"' in b)
    assert call["put_rules_script"] == '${file("${path.module}/put_rules.py")}'
    assert (TERRAFORM / "put_rules.py").is_file()
    assert call["rules_prefix"] == "${var.rules_prefix}"
    assert call["archive_bucket"] == "${module.archive.bucket}"


def test_the_put_rules_command_splices_the_shells_rules_file_into_valid_json(
    tmp_path: Path,
) -> None:
    outputs = dict(blocks_of("modules/workers/outputs.tf", "output"))
    value = outputs["put_rules_from_s3_command"]["value"]
    assert value.startswith('"${local.run_admin_task["put-rules"]} --overrides \'${replace(')
    assert '[{name = "RULES_FILE", value = local.rules_file_placeholder}]' in value
    assert value.endswith("local.rules_file_placeholder, local.rules_file_from_the_shell)}'\"")
    workers = {k: v for lc in parsed("modules/workers/main.tf")["locals"] for k, v in lc.items()}
    placeholder = unquote(workers["rules_file_placeholder"])
    # HCL's "'\\"$RULES_FILE\\"'" is the text '"$RULES_FILE"'.
    spliced = unquote(workers["rules_file_from_the_shell"]).replace('\\"', '"')
    assert spliced == "'\"$RULES_FILE\"'"
    root = dict(blocks_of("outputs.tf", "output"))
    assert (
        root["put_rules_from_s3_command"]["value"] == "${module.workers.put_rules_from_s3_command}"
    )
    assert root["rules_s3_prefix"]["value"] == "${module.workers.rules_s3_prefix}"
    # What Terraform renders (jsonencode sorts keys, no spaces), run as the docs say:
    # RULES_FILE set in the shell, then eval.
    overrides = json.dumps(
        {
            "containerOverrides": [
                {"environment": [{"name": "RULES_FILE", "value": placeholder}], "name": "put-rules"}
            ]
        },
        separators=(",", ":"),
    ).replace(placeholder, spliced)
    command = (
        "aws ecs run-task --region eu-west-1 --cluster fraud --launch-type FARGATE"
        " --task-definition fraud-put-rules --network-configuration"
        " 'awsvpcConfiguration={subnets=[subnet-1,subnet-2],securityGroups=[sg-1],"
        f"assignPublicIp=DISABLED}}' --overrides '{overrides}'"
    )
    fake = tmp_path / "aws"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    done = subprocess.run(
        ["sh", "-c", 'RULES_FILE=team/gb-pair.yaml; eval "$COMMAND"'],
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "COMMAND": command},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    argv = json.loads(done.stdout)
    sent = json.loads(argv[argv.index("--overrides") + 1])
    (override,) = sent["containerOverrides"]
    assert override == {
        "name": "put-rules",
        "environment": [{"name": "RULES_FILE", "value": "team/gb-pair.yaml"}],
    }
    assert argv[argv.index("--network-configuration") + 1].startswith("awsvpcConfiguration=")


# --- the first deployment: topics before workers -----------------------------------------


def test_the_apply_creates_the_topics_before_the_service_starts() -> None:
    workers = "modules/workers/main.tf"
    service = block(workers, "resource", "aws_ecs_service", "workers")
    assert "${terraform_data.topics}" in service["depends_on"]
    breaker = only(service, "deployment_circuit_breaker")
    assert (breaker["enable"], breaker["rollback"]) == (True, True)
    topics = block(workers, "resource", "terraform_data", "topics")
    create_topics = '${aws_ecs_task_definition.admin["create-topics"].arn}'
    # Runs again when the task definition changes (topics, partitions, image).
    assert topics["triggers_replace"] == [create_topics]
    (provisioner,) = topics["provisioner"]
    local_exec = provisioner['"local-exec"']
    assert unquote(local_exec["command"]) == "sh '${path.module}/run_admin_task.sh'"
    assert (TERRAFORM / "modules/workers/run_admin_task.sh").is_file()
    environment = local_exec["environment"]
    assert environment["TASK_DEFINITION"] == create_topics
    assert unquote(environment["CONTAINER"]) == "create-topics"
    assert environment["REGION"] == "${local.region}"
    (containers,) = (
        lc["admin_containers"] for lc in parsed(workers)["locals"] if "admin_containers" in lc
    )
    assert 'name = "create-topics"' in containers["create-topics"]
    assert {"${aws_iam_role_policy.admin}", "${aws_iam_role_policy.execution}"} <= set(
        topics["depends_on"]
    )


def test_the_topics_task_waits_for_every_route_out_of_the_workers_group() -> None:
    topics = block("modules/workers/main.tf", "resource", "terraform_data", "topics")
    assert topics["input"] == "${var.network_ready}"
    call = next(b['"workers"'] for b in parsed("main.tf")["module"] if '"workers"' in b)
    assert call["network_ready"] == "${module.network.workers_network_ready}"
    ready = dict(blocks_of("modules/network/outputs.tf", "output"))["workers_network_ready"]
    waits_for = {unquote(d).removeprefix("${").removesuffix("}") for d in ready["depends_on"]}
    network = "modules/network/main.tf"
    rules = {
        f"{kind}.{name}"
        for kind in ("aws_vpc_security_group_ingress_rule", "aws_vpc_security_group_egress_rule")
        for name, rule in blocks(network, "resource", kind)
        if "aws_security_group.workers.id" in str(rule)
    }
    endpoints = {
        f"aws_vpc_endpoint.{name}" for name, _ in blocks(network, "resource", "aws_vpc_endpoint")
    }
    assert rules and endpoints
    assert rules | endpoints | {"aws_route_table_association.private"} <= waits_for


# --- health checks and the grace period ---------------------------------------------------


def locals_of(relative: str) -> dict[str, Any]:
    return {k: v for lc in parsed(relative).get("locals", []) for k, v in lc.items()}


def root_variable(name: str) -> dict[str, Any]:
    return dict(blocks_of("variables.tf", "variable"))[name]


def test_health_is_judged_on_healthz_and_the_grace_period_outlasts_a_slow_start() -> None:
    workers = "modules/workers/main.tf"
    task = block(workers, "resource", "aws_ecs_task_definition", "worker")
    definitions = task["container_definitions"]
    assert "healthCheck = merge(local.health_check," in definitions
    assert "http://127.0.0.1:${var.web_port}/healthz" in definitions
    assert "readyz" not in definitions
    group = block("modules/web/main.tf", "resource", "aws_lb_target_group", "workers")
    check = only(group, "health_check")
    assert (unquote(check["path"]), unquote(check["matcher"])) == ("/healthz", "200")
    # The container check: ECS caps the start period at 300 s.
    health = locals_of(workers)["health_check"]
    assert health["startPeriod"] <= 300
    least = health["startPeriod"] + health["interval"] * health["retries"]
    service = block(workers, "resource", "aws_ecs_service", "workers")
    assert service["health_check_grace_period_seconds"] == "${var.grace_period_seconds}"
    (lifecycle,) = service["lifecycle"]
    assert any(
        "var.grace_period_seconds >= local.health_check.startPeriod" in p["condition"]
        for p in lifecycle["precondition"]
    )
    grace = root_variable("health_check_grace_period_seconds")
    (validation,) = grace["validation"]
    assert f">= {least}" in validation["condition"]
    # The default outlasts both checks' verdicts with room for a table recovery.
    assert grace["default"] >= least + check["interval"] * check["unhealthy_threshold"]
    call = next(b['"workers"'] for b in parsed("main.tf")["module"] if '"workers"' in b)
    assert call["grace_period_seconds"] == "${var.health_check_grace_period_seconds}"


# --- the web endpoints: an internal load balancer ----------------------------------------


def test_the_web_endpoints_sit_behind_an_internal_load_balancer() -> None:
    web = "modules/web/main.tf"
    balancer = block(web, "resource", "aws_lb", "web")
    assert balancer["internal"] is True
    assert unquote(balancer["load_balancer_type"]) == "application"
    assert balancer["drop_invalid_header_fields"] is True
    assert balancer["enable_deletion_protection"] == "${var.deletion_protection}"
    call = next(b['"web"'] for b in parsed("main.tf")["module"] if '"web"' in b)
    assert call["subnet_ids"] == "${module.network.private_subnet_ids}"
    assert call["web_port"] == "${local.web_port}"
    # Only the allowed CIDRs (default: the VPC's) reach the listener, never 0.0.0.0/0.
    assert call["allowed_cidrs"] == (
        "${var.web_allowed_cidrs == null ? [var.vpc_cidr] : var.web_allowed_cidrs}"
    )
    (validation,) = root_variable("web_allowed_cidrs")["validation"]
    assert 'cidr != "0.0.0.0/0"' in validation["condition"]
    into_alb = dict(blocks(web, "resource", "aws_vpc_security_group_ingress_rule"))
    assert into_alb["alb_from_allowed"]["for_each"] == "${toset(var.allowed_cidrs)}"
    assert into_alb["alb_from_allowed"]["cidr_ipv4"] == "${each.value}"
    assert into_alb["alb_from_allowed"]["from_port"] == "${local.listener_port}"
    # The balancer talks to the workers' web port and nothing else.
    (out_of_alb,) = [r for _n, r in blocks(web, "resource", "aws_vpc_security_group_egress_rule")]
    assert out_of_alb["referenced_security_group_id"] == "${var.workers_security_group_id}"
    assert out_of_alb["from_port"] == out_of_alb["to_port"] == "${var.web_port}"
    # HTTPS on 443 with a certificate (TLS 1.2 at least), else HTTP on 80; never both.
    https = block(web, "resource", "aws_lb_listener", "https")
    http = block(web, "resource", "aws_lb_listener", "http")
    assert https["count"] == "${local.https ? 1 : 0}"
    assert http["count"] == "${local.https ? 0 : 1}"
    assert (https["port"], unquote(https["protocol"])) == (443, "HTTPS")
    assert https["certificate_arn"] == "${var.certificate_arn}"
    policy = dict(blocks_of("modules/web/variables.tf", "variable"))["ssl_policy"]["default"]
    assert unquote(policy).startswith("ELBSecurityPolicy-TLS13-1-2")
    assert locals_of(web)["https"] == "${var.certificate_arn != null}"


def test_every_task_registers_its_web_port_once_a_listener_forwards_to_it() -> None:
    group = block("modules/web/main.tf", "resource", "aws_lb_target_group", "workers")
    assert unquote(group["target_type"]) == "ip"
    assert group["port"] == "${var.web_port}"
    assert only(group, "stickiness")["enabled"] is True
    service = block("modules/workers/main.tf", "resource", "aws_ecs_service", "workers")
    balancer = only(service, "load_balancer")
    assert balancer["target_group_arn"] == "${var.target_group_arn}"
    assert (unquote(balancer["container_name"]), balancer["container_port"]) == (
        "worker",
        "${var.web_port}",
    )
    call = next(b['"workers"'] for b in parsed("main.tf")["module"] if '"workers"' in b)
    assert call["target_group_arn"] == "${module.web.target_group_arn}"
    assert call["web_port"] == "${local.web_port}"
    output = dict(blocks_of("modules/web/outputs.tf", "output"))["target_group_arn"]
    assert set(output["depends_on"]) == {"${aws_lb_listener.https}", "${aws_lb_listener.http}"}
    root = dict(blocks_of("outputs.tf", "output"))
    assert root["web_url"]["value"] == "${module.web.url}"


def test_the_worker_listens_on_its_task_address_and_advertises_it() -> None:
    workers = "modules/workers/main.tf"
    environment = locals_of(workers)["worker_environment"]
    assert 'FRAUD_WEB_BIND = "0.0.0.0"' in environment
    assert "FRAUD_WEB_PORT = tostring(var.web_port)" in environment
    # FRAUD_WEB_HOST is the task's address, known only at run time: worker_entry.py sets it.
    assert "FRAUD_WEB_HOST" not in environment
    definitions = block(workers, "resource", "aws_ecs_task_definition", "worker")[
        "container_definitions"
    ]
    assert 'entryPoint = ["python", "-c"]' in definitions
    assert 'command = [var.worker_entry_script, "worker", "-l", "info"]' in definitions
    call = next(b['"workers"'] for b in parsed("main.tf")["module"] if '"workers"' in b)
    assert call["worker_entry_script"] == '${file("${path.module}/worker_entry.py")}'


def test_the_web_port_is_open_to_the_load_balancer_and_the_workers_only() -> None:
    sources = []
    for path in ("modules/network/main.tf", "modules/web/main.tf"):
        for _name, rule in blocks(path, "resource", "aws_vpc_security_group_ingress_rule"):
            if rule["security_group_id"] in (
                "${aws_security_group.workers.id}",
                "${var.workers_security_group_id}",
            ):
                assert rule["from_port"] == rule["to_port"] == "${var.web_port}", rule
                assert not {"cidr_ipv4", "cidr_ipv6", "prefix_list_id"} & set(rule)
                sources.append(rule["referenced_security_group_id"])
    assert sorted(sources) == ["${aws_security_group.alb.id}", "${aws_security_group.workers.id}"]
    call = next(b['"network"'] for b in parsed("main.tf")["module"] if '"network"' in b)
    assert call["web_port"] == "${local.web_port}"


def test_the_api_token_without_https_is_warned_of_at_plan() -> None:
    (check,) = parsed("main.tf")["check"]
    (assertion,) = check['"api_token_only_over_https"']["assert"]
    assert assertion["condition"] == (
        "${var.api_token_secret_arn == null || var.web_certificate_arn != null}"
    )


# --- Slack: a webhook or a bot token -----------------------------------------------------


def slack_environment(enabled: bool, channel: str | None) -> dict[str, str]:
    """The notifier's environment as the module builds it for these variables: each secret's
    count condition read from the HCL, then the keys its comprehensions add."""
    notifier = "modules/notifier/main.tf"
    secrets = dict(blocks(notifier, "resource", "aws_secretsmanager_secret"))
    conditions = {
        "${var.slack_enabled && var.slack_channel == null ? 1 : 0}": enabled and channel is None,
        "${var.slack_enabled && var.slack_channel != null ? 1 : 0}": enabled
        and channel is not None,
    }
    created = {name for name, body in secrets.items() if conditions[body["count"]]}
    function = block(notifier, "resource", "aws_lambda_function", "notifier")
    (environment,) = function["environment"]
    env = {
        "IDEMPOTENCY_TABLE": "fraud_notifier_idempotency",
        "SNS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:fraud-alerts",
        "AWS_REGION": "eu-west-1",
    }
    values = {
        "secret.arn": "arn:aws:secretsmanager:eu-west-1:1:secret:x",
        "var.slack_channel": channel,
    }
    comprehension = r'for secret in aws_secretsmanager_secret\.(\w+) : "(\w+)" => ([\w.]+)'
    for secret, key, value in re.findall(comprehension, environment["variables"]):
        if secret in created:
            env[key] = str(values[value])
    return env


@pytest.mark.parametrize(
    ("enabled", "channel", "mode"),
    [(True, None, "webhook"), (True, "#fraud-alerts", "chat"), (False, "#fraud-alerts", None)],
)
def test_the_notifier_accepts_the_slack_settings_terraform_gives_it(
    enabled: bool, channel: str | None, mode: str | None
) -> None:
    env = slack_environment(enabled, channel)
    config = NotifierConfig.from_env(env)
    assert config.slack_mode == mode
    if mode == "chat":
        assert config.channel == channel and config.bot_token_secret_arn
        assert "SLACK_WEBHOOK_SECRET_ARN" not in env
    if mode == "webhook":
        assert config.webhook_secret_arn and "SLACK_CHANNEL" not in env


def test_the_notifier_may_read_the_slack_secret_it_is_given_and_no_other() -> None:
    notifier = "modules/notifier/main.tf"
    secrets = {name for name, _ in blocks(notifier, "resource", "aws_secretsmanager_secret")}
    assert secrets == {"slack_webhook", "slack_bot_token"}
    assert locals_of(notifier)["slack_secrets"] == (
        "${concat(aws_secretsmanager_secret.slack_webhook,"
        " aws_secretsmanager_secret.slack_bot_token)}"
    )
    policy = block(notifier, "data", "aws_iam_policy_document", "notifier")
    (dynamic,) = policy["dynamic"]
    statement = dynamic['"statement"']
    assert statement["for_each"] == "${local.slack_secrets}"
    (content,) = statement["content"]
    assert content["actions"] == ['"secretsmanager:GetSecretValue"']
    assert content["resources"] == ["${statement.value.arn}"]
    # Created without a value: neither the URL nor the token is in any plan or state.
    assert not list(blocks(notifier, "resource", "aws_secretsmanager_secret_version"))
    call = next(b['"notifier"'] for b in parsed("main.tf")["module"] if '"notifier"' in b)
    assert call["slack_channel"] == "${var.slack_channel}"
    root = dict(blocks_of("outputs.tf", "output"))
    assert root["put_slack_secret_command"]["value"] == (
        "${module.notifier.put_slack_secret_command}"
    )


# --- Slack's buttons: a function URL, verified by the function ----------------------------


def test_the_slack_buttons_url_runs_the_verifying_handler_with_its_secret_by_arn() -> None:
    module = "modules/slack_actions/main.tf"
    url = block(module, "resource", "aws_lambda_function_url", "actions")
    # No AWS auth (Slack cannot sign with SigV4): the handler verifies Slack's signature.
    assert unquote(url["authorization_type"]) == "NONE"
    assert url["function_name"] == "${aws_lambda_function.actions.function_name}"
    actions = block(module, "resource", "aws_lambda_function", "actions")
    closer = block(module, "resource", "aws_lambda_function", "closer")
    for function in (actions, closer):
        module_name, _, attribute = unquote(function["handler"]).rpartition(".")
        assert callable(getattr(importlib.import_module(module_name), attribute))
    # The environment Terraform gives is one the handler accepts; the signing secret is an
    # ARN, never a value (no secret version, no variable holding it).
    env = {key: "x" for key in only(actions, "environment")["variables"]}
    config = ActionsConfig.from_env(env)
    assert config.signing_secret is None and config.signing_secret_arn
    assert config.closer_function and config.cases_api_url is None
    assert not list(blocks(module, "resource", "aws_secretsmanager_secret_version"))
    variables = {name for name, _ in blocks_of("modules/slack_actions/variables.tf", "variable")}
    assert not {name for name in variables if "signing" in name or name == "secret"}
    # The closer runs in the VPC (the internal ALB) with the close API's URL.
    assert "vpc_config" in closer
    assert set(only(closer, "environment")["variables"]) == {
        "CASES_API_URL",
        "POWERTOOLS_SERVICE_NAME",
    }
    # Replays: a record per request in the notifier's idempotency table, keyed and expiring
    # as the guard writes it.
    call = next(b['"slack_actions"'] for b in parsed("main.tf")["module"] if '"slack_actions"' in b)
    assert call["replay_table_name"] == "${module.notifier.idempotency_table_name}"
    table = block("modules/notifier/main.tf", "resource", "aws_dynamodb_table", "idempotency")
    assert unquote(table["hash_key"]) == guard.KEY_ATTR
    assert unquote(only(table, "ttl")["attribute_name"]) == guard.EXPIRY_ATTR
    # Root: optional, and its URL is an output (the Slack app's interactivity URL).
    assert call["count"] == "${var.slack_actions_enabled ? 1 : 0}"
    outputs = dict(blocks_of("outputs.tf", "output"))
    assert outputs["slack_interactivity_url"]["value"] == (
        "${one(module.slack_actions[*].function_url)}"
    )
