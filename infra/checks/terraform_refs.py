"""Reference checks of a Terraform tree, with python-hcl2 and without Terraform.

    python -m infra.checks.terraform_refs [infra/terraform]    # prints problems, exit 1 if any

``terraform validate`` needs the providers from a registry; this needs nothing and catches
the mistakes a refactoring into modules makes. In every directory holding ``.tf`` files:

- each ``var.X``, ``local.X``, ``module.X``, ``data.T.N`` and resource ``T.N`` names
  something declared in that directory (references inside string templates included,
  text in string literals ignored);
- each ``module.X.Y`` names an output ``Y`` of the child module;
- each module call passes only variables the child declares, and every variable of the
  child that has no default;
- each variable has a description and is used; each local is used; nothing is declared
  twice;
- each ``moved`` block moves to an address that exists, from one that no longer does.

It reads expressions lexically (python-hcl2 gives them back as text), so a reference is
what looks like one outside string literals: good enough for a tree written to be read.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

_PARSE_OPTIONS = hcl2.SerializationOptions(with_comments=False, preserve_heredocs=False)
# Arguments of a module block that are Terraform's, not the child's variables.
_MODULE_META_ARGUMENTS = frozenset({"source", "version", "count", "for_each", "providers"})
_META_ARGUMENTS = _MODULE_META_ARGUMENTS | {"depends_on"}
# Resource type prefixes recognised even where no required_providers block names them.
_KNOWN_PROVIDERS = frozenset({"aws", "archive", "external", "http", "null", "random", "time"})

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_NOT_AFTER = r"(?<![\w.\-])"  # not the tail of a longer name or of an attribute chain
_VAR = re.compile(rf"{_NOT_AFTER}var\.({_NAME})")
_LOCAL = re.compile(rf"{_NOT_AFTER}local\.({_NAME})")
_MODULE = re.compile(rf"{_NOT_AFTER}module\.({_NAME})(?:\[[^\]]*\])?(?:\.({_NAME}))?")
_DATA = re.compile(rf"{_NOT_AFTER}data\.({_NAME})\.({_NAME})")
_RESOURCE = re.compile(rf"{_NOT_AFTER}([a-z][a-z0-9]*)_([a-z0-9_]+)\.({_NAME})")


@dataclass(frozen=True, order=True)
class Problem:
    """One finding: the file (relative to the checked tree) and what is wrong."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass(frozen=True)
class Reference:
    kind: str  # "var", "local", "module", "data" or "resource"
    name: str  # the variable, local, module or resource/data name
    detail: str | None  # the resource/data type, or the module output
    file: Path
    where: str  # the block it sits in, for the message

    def address(self) -> str:
        if self.kind == "resource":
            return f"{self.detail}.{self.name}"
        if self.kind == "data":
            return f"data.{self.detail}.{self.name}"
        if self.kind == "module" and self.detail is not None:
            return f"module.{self.name}.{self.detail}"
        return f"{self.kind}.{self.name}"


@dataclass(frozen=True)
class Variable:
    name: str
    file: Path
    has_default: bool
    has_description: bool


@dataclass(frozen=True)
class ModuleCall:
    name: str
    file: Path
    source: str
    arguments: frozenset[str]


@dataclass(frozen=True)
class Move:
    file: Path
    source: str  # the `from` address
    target: str  # the `to` address


@dataclass
class TerraformModule:
    """What one directory of ``.tf`` files declares and refers to."""

    directory: Path
    variables: dict[str, Variable] = field(default_factory=dict)
    locals: dict[str, Path] = field(default_factory=dict)
    resources: dict[tuple[str, str], Path] = field(default_factory=dict)
    data: dict[tuple[str, str], Path] = field(default_factory=dict)
    modules: dict[str, ModuleCall] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    providers: set[str] = field(default_factory=set)
    references: list[Reference] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    # Found while loading: files that do not parse, names declared twice.
    problems: list[tuple[Path, str]] = field(default_factory=list)


# --- expressions -------------------------------------------------------------------------


def _skip_string(text: str, i: int, out: list[str], terminator: str | None) -> int:
    """Past a string literal or template starting at ``i`` (after its opening quote):
    its text is dropped, the code of its ``${...}``/``%{...}`` parts kept."""
    out.append(" ")
    while i < len(text):
        char = text[i]
        if terminator is not None and char == terminator:
            return i + 1
        if char == "\\":
            i += 2
        elif text.startswith(("$${", "%%{"), i):  # escaped: literal text
            i += 3
        elif text.startswith(("${", "%{"), i):
            out.append(" ")
            i = _scan_code(text, i + 2, out, until_brace=True)
            out.append(" ")
        else:
            i += 1
    return i


def _scan_code(text: str, i: int, out: list[str], *, until_brace: bool) -> int:
    """Copy code from ``i`` to ``out`` without string contents; with ``until_brace`` stop
    after the ``}`` that closes an interpolation."""
    depth = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _skip_string(text, i + 1, out, '"')
            continue
        if until_brace and char == "{":
            depth += 1
        elif until_brace and char == "}":
            if depth == 0:
                return i + 1
            depth -= 1
        out.append(char)
        i += 1
    return i


def expression_code(value: str) -> str:
    """The code of an attribute value as python-hcl2 serialises it (``${expr}`` for an
    expression, ``"text ${expr}"`` for a string or template), string contents removed."""
    out: list[str] = []
    if value.startswith("${") and value.endswith("}"):
        _scan_code(value[2:-1], 0, out, until_brace=False)
    else:
        _scan_code(value, 0, out, until_brace=False)
    return "".join(out)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed value (object keys too), skipping python-hcl2's markers."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if str(key).startswith("__"):
                continue
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def references_in(code: str, providers: Iterable[str]) -> Iterator[tuple[str, str, str | None]]:
    """``(kind, name, detail)`` of every reference in ``code`` (see :class:`Reference`)."""
    for match in _VAR.finditer(code):
        yield "var", match[1], None
    for match in _LOCAL.finditer(code):
        yield "local", match[1], None
    for match in _MODULE.finditer(code):
        yield "module", match[1], match[2]
    for match in _DATA.finditer(code):
        yield "data", match[2], match[1]
    known = set(providers)
    for match in _RESOURCE.finditer(code):
        if match[1] in known:
            yield "resource", match[3], f"{match[1]}_{match[2]}"


# --- loading a module --------------------------------------------------------------------


def _label(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _labelled(blocks: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(label, body)`` of each block of a one-label kind (variable, module, output)."""
    for block in blocks if isinstance(blocks, list) else [blocks]:
        for label, body in block.items():
            if not label.startswith("__"):
                yield _label(label), body


def _typed(blocks: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(type, name, body)`` of each block of a two-label kind (resource, data)."""
    for kind, named in _labelled(blocks):
        for name, body in named.items():
            if not name.startswith("__"):
                yield kind, _label(name), body


class _Loader:
    def __init__(self, directory: Path) -> None:
        self.module = TerraformModule(directory)
        self.pending: list[tuple[Path, str, Any]] = []  # (file, where, value) to scan

    def declare(self, table: dict[Any, Path], key: Any, file: Path, what: str) -> None:
        if key in table:
            self.twice(file, what, table[key])
        table[key] = file

    def twice(self, file: Path, what: str, first: Path) -> None:
        self.module.problems.append((file, f"{what} is declared twice (also in {first.name})"))

    def load_file(self, file: Path) -> None:
        try:
            parsed = hcl2.loads(file.read_text(), serialization_options=_PARSE_OPTIONS)
        except Exception as exc:  # python-hcl2 raises lark's many exception types
            text = str(exc).strip()
            first_line = text.splitlines()[0] if text else ""
            self.module.problems.append(
                (file, f"does not parse: {type(exc).__name__} {first_line}".rstrip())
            )
            return
        handlers: dict[str, Callable[[Path, Any], None]] = {
            "variable": self._variables,
            "locals": self._locals,
            "resource": self._resources,
            "data": self._data,
            "module": self._modules,
            "output": self._outputs,
            "terraform": self._terraform,
            "moved": self._moved,
            "check": self._checks,
            "removed": lambda _file, _blocks: None,  # names what is gone on purpose
        }
        for kind, blocks in parsed.items():
            handler = handlers.get(kind)
            if handler is None:  # provider, import, ...: their expressions refer to things too
                self.pending.append((file, kind, blocks))
            else:
                handler(file, blocks)

    def _variables(self, file: Path, blocks: Any) -> None:
        for name, body in _labelled(blocks):
            if name in self.module.variables:
                self.twice(file, f"variable {name!r}", self.module.variables[name].file)
            self.module.variables[name] = Variable(
                name, file, "default" in body, bool(body.get("description"))
            )
            self.pending.append((file, f"variable {name!r}", body.get("validation", [])))

    def _locals(self, file: Path, blocks: Any) -> None:
        for block in blocks:
            for name, value in block.items():
                if not name.startswith("__"):
                    self.declare(self.module.locals, name, file, f"local {name!r}")
                    self.pending.append((file, f"local {name!r}", value))

    def _resources(self, file: Path, blocks: Any) -> None:
        for type_, name, body in _typed(blocks):
            self.declare(self.module.resources, (type_, name), file, f"{type_}.{name}")
            self.pending.append((file, f"{type_}.{name}", body))

    def _data(self, file: Path, blocks: Any) -> None:
        for type_, name, body in _typed(blocks):
            self.declare(self.module.data, (type_, name), file, f"data.{type_}.{name}")
            self.pending.append((file, f"data.{type_}.{name}", body))

    def _modules(self, file: Path, blocks: Any) -> None:
        for name, body in _labelled(blocks):
            arguments = frozenset(
                k for k in body if not k.startswith("__") and k not in _META_ARGUMENTS
            )
            if name in self.module.modules:
                self.twice(file, f"module {name!r}", self.module.modules[name].file)
            source = _label(str(body.get("source", "")))
            self.module.modules[name] = ModuleCall(name, file, source, arguments)
            rest = {k: v for k, v in body.items() if k != "source"}
            self.pending.append((file, f"module {name!r}", rest))

    def _outputs(self, file: Path, blocks: Any) -> None:
        for name, body in _labelled(blocks):
            self.declare(self.module.outputs, name, file, f"output {name!r}")
            self.pending.append((file, f"output {name!r}", body))

    def _terraform(self, _file: Path, blocks: Any) -> None:
        for block in blocks:
            for required in block.get("required_providers", []):
                self.module.providers.update(k for k in required if not k.startswith("__"))

    def _moved(self, file: Path, blocks: Any) -> None:
        for block in blocks:
            source = expression_code(str(block.get("from", ""))).strip()
            target = expression_code(str(block.get("to", ""))).strip()
            self.module.moves.append(Move(file, source, target))

    def _checks(self, file: Path, blocks: Any) -> None:
        for check_name, body in _labelled(blocks):
            self._data(file, body.get("data", []))
            rest = {k: v for k, v in body.items() if k != "data"}
            self.pending.append((file, f"check {check_name!r}", rest))

    def finish(self) -> TerraformModule:
        module = self.module
        providers = module.providers | _KNOWN_PROVIDERS
        providers |= {type_.split("_", 1)[0] for type_, _ in (*module.resources, *module.data)}
        for file, where, value in self.pending:
            for text in _strings(value):
                for kind, name, detail in references_in(expression_code(text), providers):
                    module.references.append(Reference(kind, name, detail, file, where))
        return module


def load_module(directory: Path) -> TerraformModule:
    """Declarations and references of the ``.tf`` files directly in ``directory``."""
    loader = _Loader(directory)
    for file in sorted(directory.glob("*.tf")):
        loader.load_file(file)
    return loader.finish()


# --- checking ----------------------------------------------------------------------------


def _is_local_source(source: str) -> bool:
    return source.startswith(("./", "../"))


def _declared(module: TerraformModule, ref: Reference) -> bool:
    if ref.kind == "var":
        return ref.name in module.variables
    if ref.kind == "local":
        return ref.name in module.locals
    if ref.kind == "module":
        return ref.name in module.modules
    if ref.kind == "data":
        return (str(ref.detail), ref.name) in module.data
    return (str(ref.detail), ref.name) in module.resources


def _check_references(
    module: TerraformModule, child_of: Callable[[ModuleCall], TerraformModule | None]
) -> Iterator[tuple[Path, str]]:
    for ref in module.references:
        if not _declared(module, ref):
            yield ref.file, f"{ref.where}: {ref.address()} is not declared in this module"
        elif ref.kind == "module" and ref.detail is not None:
            child = child_of(module.modules[ref.name])
            if child is not None and ref.detail not in child.outputs:
                yield (
                    ref.file,
                    f"{ref.where}: {ref.address()}: module {ref.name!r} has no output "
                    f"{ref.detail!r}",
                )


def _check_calls(
    module: TerraformModule, child_of: Callable[[ModuleCall], TerraformModule | None]
) -> Iterator[tuple[Path, str]]:
    for call in module.modules.values():
        if not _is_local_source(call.source):
            continue  # a registry or git module: nothing here to compare with
        child = child_of(call)
        if child is None:
            yield call.file, f"module {call.name!r}: source {call.source!r} has no .tf files"
            continue
        for argument in sorted(call.arguments - child.variables.keys()):
            yield (
                call.file,
                f"module {call.name!r} passes {argument!r}, which {call.source} does not declare",
            )
        required = {name for name, v in child.variables.items() if not v.has_default}
        for missing in sorted(required - call.arguments):
            yield (
                call.file,
                f"module {call.name!r} does not pass {missing!r}, which {call.source} requires",
            )


def _check_declarations(module: TerraformModule) -> Iterator[tuple[Path, str]]:
    used = {(ref.kind, ref.name) for ref in module.references}
    for variable in module.variables.values():
        if not variable.has_description:
            yield variable.file, f"variable {variable.name!r} has no description"
        if ("var", variable.name) not in used:
            yield variable.file, f"variable {variable.name!r} is never used"
    for name, file in module.locals.items():
        if ("local", name) not in used:
            yield file, f"local {name!r} is never used"


def _check_moves(
    module: TerraformModule, child_of: Callable[[ModuleCall], TerraformModule | None]
) -> Iterator[tuple[Path, str]]:
    for move in module.moves:
        if _resolves(module, move.source, child_of):
            yield move.file, f"moved from {move.source}, which is still declared"
        if not _resolves(module, move.target, child_of):
            yield move.file, f"moved to {move.target}, which is not declared"


def _resolves(
    module: TerraformModule,
    address: str,
    child_of: Callable[[ModuleCall], TerraformModule | None],
) -> bool:
    """Whether a resource address (``T.N``, ``data.T.N``, ``module.M[...].<address>``,
    or ``module.M`` itself) is declared."""
    parts = re.sub(r"\[[^\]]*\]", "", address).split(".")
    if parts[0] == "module" and len(parts) >= 2:
        call = module.modules.get(parts[1])
        if call is None:
            return False
        if len(parts) == 2:
            return True
        child = child_of(call)
        return child is not None and _resolves(child, ".".join(parts[2:]), child_of)
    if parts[0] == "data" and len(parts) == 3:
        return (parts[1], parts[2]) in module.data
    return len(parts) == 2 and (parts[0], parts[1]) in module.resources


def check_module(
    module: TerraformModule, load: Callable[[Path], TerraformModule] = load_module
) -> list[tuple[Path, str]]:
    """``(file, message)`` for every problem of one module (its calls' children are
    loaded with ``load`` to compare arguments and outputs)."""

    def child_of(call: ModuleCall) -> TerraformModule | None:
        if not _is_local_source(call.source):
            return None
        directory = (module.directory / call.source).resolve()
        if not directory.is_dir() or not any(directory.glob("*.tf")):
            return None
        return load(directory)

    found = list(module.problems)
    found += _check_references(module, child_of)
    found += _check_calls(module, child_of)
    found += _check_declarations(module)
    found += _check_moves(module, child_of)
    return found


def check_tree(root: Path) -> list[Problem]:
    """Every problem of every directory under ``root`` that holds ``.tf`` files."""
    root = root.resolve()
    cache: dict[Path, TerraformModule] = {}

    def load(directory: Path) -> TerraformModule:
        directory = directory.resolve()
        if directory not in cache:
            cache[directory] = load_module(directory)
        return cache[directory]

    directories = sorted(
        {file.parent for file in root.rglob("*.tf") if ".terraform" not in file.parts}
    )
    problems: set[Problem] = set()
    for directory in directories:
        for file, message in check_module(load(directory), load):
            problems.add(Problem(_relative(file, root), message))
    return sorted(problems)


def _relative(file: Path, root: Path) -> str:
    try:
        return str(file.resolve().relative_to(root))
    except ValueError:
        return str(file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.checks.terraform_refs", description=__doc__.split("\n\n")[0]
    )
    default = Path(__file__).resolve().parents[1] / "terraform"
    parser.add_argument("root", nargs="?", type=Path, default=default)
    args = parser.parse_args(argv)
    problems = check_tree(args.root)
    for problem in problems:
        print(problem)
    print(f"terraform_refs: {len(problems)} problems in {args.root}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
