"""The reference checker (infra/checks/terraform_refs.py) on small trees, broken one way each.

Each broken tree is the good tree with one mistake, so a test fails only if the checker
misses that mistake (or reports something else), never because the fixture is untidy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from infra.checks.terraform_refs import Problem, check_tree, expression_code, load_module

TreeFactory = Callable[[Mapping[str, str]], Path]

GOOD_ROOT = """
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.40" }
  }
}

variable "name" {
  description = "Prefix."
  type        = string
  default     = "fraud"
}

locals {
  bucket = "${var.name}-archive"
}

data "aws_caller_identity" "current" {}

resource "aws_s3_bucket" "archive" {
  bucket = "${local.bucket}-${data.aws_caller_identity.current.account_id}"
}

module "table" {
  source     = "./modules/table"
  table_name = "${var.name}_alerts"
  depends_on = [aws_s3_bucket.archive]
}

output "table_arn" {
  description = "The table."
  value       = module.table.arn
}

moved {
  from = aws_dynamodb_table.alerts
  to   = module.table.aws_dynamodb_table.this
}
"""

GOOD_CHILD = """
variable "table_name" {
  description = "Name of the table."
  type        = string
}

variable "billing_mode" {
  description = "Billing mode."
  type        = string
  default     = "PAY_PER_REQUEST"
}

resource "aws_dynamodb_table" "this" {
  name         = var.table_name
  billing_mode = var.billing_mode
  hash_key     = "id"
}

output "arn" {
  description = "ARN."
  value       = aws_dynamodb_table.this.arn
}
"""


@pytest.fixture
def tree_factory(tmp_path: Path) -> TreeFactory:
    """Writes the good tree with some files replaced, returns its root."""

    def make(replacements: Mapping[str, str]) -> Path:
        files = {"main.tf": GOOD_ROOT, "modules/table/main.tf": GOOD_CHILD, **replacements}
        for name, text in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return tmp_path

    return make


def messages(problems: list[Problem]) -> list[str]:
    return [str(problem) for problem in problems]


def test_the_good_fixture_has_no_problem(tree_factory: TreeFactory) -> None:
    assert check_tree(tree_factory({})) == []


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        pytest.param(
            "main.tf",
            "${var.name}-archive",
            "${var.nmae}-archive",
            "main.tf: local 'bucket': var.nmae is not declared in this module",
            id="an undeclared variable inside a template",
        ),
        pytest.param(
            "main.tf",
            '"${local.bucket}-',
            '"${local.buckets}-',
            [
                "main.tf: aws_s3_bucket.archive: local.buckets is not declared in this module",
                "main.tf: local 'bucket' is never used",
            ],
            id="an undeclared local",
        ),
        pytest.param(
            "main.tf",
            "[aws_s3_bucket.archive]",
            "[aws_s3_bucket.archives]",
            "main.tf: module 'table': aws_s3_bucket.archives is not declared in this module",
            id="an undeclared resource in depends_on",
        ),
        pytest.param(
            "main.tf",
            "data.aws_caller_identity.current.account_id",
            "data.aws_caller_identity.this.account_id",
            "main.tf: aws_s3_bucket.archive: data.aws_caller_identity.this is not declared"
            " in this module",
            id="an undeclared data source",
        ),
        pytest.param(
            "main.tf",
            "value       = module.table.arn",
            "value       = module.tables.arn",
            "main.tf: output 'table_arn': module.tables.arn is not declared in this module",
            id="an undeclared module",
        ),
        pytest.param(
            "main.tf",
            "value       = module.table.arn",
            "value       = module.table.table_arn",
            "main.tf: output 'table_arn': module.table.table_arn: module 'table' has no output"
            " 'table_arn'",
            id="a module output the child does not have",
        ),
        pytest.param(
            "main.tf",
            'table_name = "${var.name}_alerts"',
            'table_name = "${var.name}_alerts"\n  read_capacity = 5',
            "main.tf: module 'table' passes 'read_capacity', which ./modules/table does not"
            " declare",
            id="a module argument the child does not declare",
        ),
        pytest.param(
            "main.tf",
            'table_name = "${var.name}_alerts"',
            'name = "${var.name}_alerts"',
            [
                "main.tf: module 'table' does not pass 'table_name', which ./modules/table"
                " requires",
                "main.tf: module 'table' passes 'name', which ./modules/table does not declare",
            ],
            id="a required module argument left out",
        ),
        pytest.param(
            "modules/table/main.tf",
            'description = "Billing mode."\n',
            "",
            "modules/table/main.tf: variable 'billing_mode' has no description",
            id="a variable without description",
        ),
        pytest.param(
            "modules/table/main.tf",
            "billing_mode = var.billing_mode",
            'billing_mode = "PROVISIONED"',
            "modules/table/main.tf: variable 'billing_mode' is never used",
            id="an unused variable",
        ),
        pytest.param(
            "main.tf",
            '"${local.bucket}-',
            '"fraud-archive-',
            "main.tf: local 'bucket' is never used",
            id="an unused local",
        ),
        pytest.param(
            "main.tf",
            "to   = module.table.aws_dynamodb_table.this",
            "to   = module.table.aws_dynamodb_table.alerts",
            "main.tf: moved to module.table.aws_dynamodb_table.alerts, which is not declared",
            id="a move to an address that does not exist",
        ),
        pytest.param(
            "main.tf",
            "from = aws_dynamodb_table.alerts",
            "from = aws_s3_bucket.archive",
            "main.tf: moved from aws_s3_bucket.archive, which is still declared",
            id="a move from an address still declared",
        ),
    ],
)
def test_a_broken_reference_is_reported(
    tree_factory: TreeFactory, file: str, old: str, new: str, expected: str | list[str]
) -> None:
    text = {"main.tf": GOOD_ROOT, "modules/table/main.tf": GOOD_CHILD}[file]
    assert text.count(old) == 1, "the fixture no longer holds the text this case replaces"
    root = tree_factory({file: text.replace(old, new)})
    wanted = [expected] if isinstance(expected, str) else expected
    assert messages(check_tree(root)) == sorted(wanted)


def test_a_resource_declared_twice_is_reported(tree_factory: TreeFactory) -> None:
    extra = 'resource "aws_s3_bucket" "archive" {\n  bucket = "again"\n}\n'
    root = tree_factory({"extra.tf": extra})
    assert messages(check_tree(root)) == [
        "main.tf: aws_s3_bucket.archive is declared twice (also in extra.tf)",
    ]


def test_a_file_that_does_not_parse_is_reported(tree_factory: TreeFactory) -> None:
    root = tree_factory({"broken.tf": 'resource "aws_s3_bucket" "x" {\n  bucket = \n'})
    found = messages(check_tree(root))
    assert len(found) == 1
    assert found[0].startswith("broken.tf: does not parse")


def test_a_module_source_without_tf_files_is_reported(tree_factory: TreeFactory) -> None:
    root = tree_factory({"main.tf": GOOD_ROOT.replace("./modules/table", "./modules/tabel")})
    found = messages(check_tree(root))
    assert "main.tf: module 'table': source './modules/tabel' has no .tf files" in found


def test_text_in_string_literals_is_not_a_reference(tree_factory: TreeFactory) -> None:
    # "var.nope" and "aws_s3_bucket.nope" are words here, not references.
    text = GOOD_ROOT.replace(
        'description = "The table."', 'description = "Not var.nope nor aws_s3_bucket.nope."'
    )
    assert check_tree(tree_factory({"main.tf": text})) == []


def test_expression_code_keeps_interpolations_and_drops_literal_text() -> None:
    assert expression_code('"${var.a}-var.b-$${var.c}"').split() == ["var.a"]
    assert "local.x" in expression_code('${jsonencode({k = "v ${local.x}"})}')
    assert "var.z" not in expression_code('${"var.z"}')


def test_the_loader_reads_module_calls_and_providers(tree_factory: TreeFactory) -> None:
    module = load_module(tree_factory({}))
    assert module.modules["table"].arguments == {"table_name"}
    assert "aws" in module.providers
    assert module.variables["name"].has_default
