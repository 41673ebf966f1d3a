"""Every private name of Faust, aiokafka and mode the worker uses, pinned.

They are used only inside subclasses of their owners (``FRAMEWORK_SUBCLASSES``); this test
finds each one in those classes' source and checks the framework still defines it, so
that an upgrade that renames or drops one fails here, naming it, instead of changing the
delivery code's behaviour silently (docs/how-to/upgrade.md). A second test holds the rest
of the code to that rule.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from app.worker.faust_app import FraudApp
from app.worker.transport import Consumer, ConsumerThread, Producer, Transport
from tables.store import MemoryStateStore, RocksDBStateStore, StateTable

REPO = Path(__file__).resolve().parents[3]
FRAMEWORK_SUBCLASSES: list[type] = [
    ConsumerThread,
    Consumer,
    Producer,
    Transport,
    RocksDBStateStore,
    MemoryStateStore,
    StateTable,
    FraudApp,
]
# Private names used on a framework object that is not ``self``, inside such a subclass:
# (the subclass, the framework class that owns the name, the name).
FOREIGN: list[tuple[type, type, str]] = [
    # The fetch wait Faust hard-codes when it builds the worker's aiokafka consumer.
    (ConsumerThread, AIOKafkaConsumer, "_fetch_max_wait_ms"),
    # The least a fetch waits for, which Faust does not pass at all.
    (ConsumerThread, AIOKafkaConsumer, "_fetch_min_bytes"),
]
# Where the upgrade guide says these pins were checked; setup.cfg pins the same.
PINNED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": None}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


# The framework's private methods each subclass overrides: if one were renamed upstream,
# the override would silently stop being called.
OVERRIDES: dict[type, set[str]] = {
    ConsumerThread: {"_create_worker_consumer"},
    Consumer: {"_wait_next_records", "_new_consumer_thread"},
    RocksDBStateStore: {"_get", "_set"},
    FraudApp: {"_on_agent_error", "_new_transport"},
}


def private_names_used(cls: type, *, on_super: bool = False) -> set[str]:
    """``self._x`` and ``cls._x`` (or, ``on_super``, ``super()._x``) in the class's own
    source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    used = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        value = node.value
        is_super = isinstance(value, ast.Call) and ast.unparse(value.func) == "super"
        is_self = isinstance(value, ast.Name) and value.id in {"self", "cls"}
        if is_super if on_super else is_self:
            used.add(node.attr)
    return used


def defined_in(cls: type, name: str) -> bool:
    """The class defines ``name``: in its namespace, or assigned to ``self`` in its source."""
    if name in vars(cls):
        return True
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return False
    return re.search(rf"self\.{re.escape(name)}\s*(:[^=\n]*)?=[^=]", source) is not None


def framework_bases(cls: type) -> list[type]:
    return [
        k for k in cls.__mro__[1:] if k.__module__.split(".")[0] in {"faust", "aiokafka", "mode"}
    ]


@pytest.mark.parametrize("cls", FRAMEWORK_SUBCLASSES, ids=lambda c: c.__qualname__)
def test_every_private_name_a_subclass_uses_is_still_its_frameworks(cls: type) -> None:
    ours = {k for k in cls.__mro__ if k.__module__.split(".")[0] in {"app", "tables", "agents"}}
    framework = framework_bases(cls)
    theirs = {n for n in private_names_used(cls) if not any(defined_in(k, n) for k in ours)}
    theirs |= private_names_used(cls, on_super=True) | OVERRIDES.get(cls, set())
    missing = [n for n in sorted(theirs) if not any(defined_in(k, n) for k in framework)]
    assert not missing, (
        f"{cls.__qualname__} uses {missing}, which the installed Faust/aiokafka/mode no longer"
        " define: see docs/how-to/upgrade.md before changing the pins"
    )


@pytest.mark.parametrize("cls", FRAMEWORK_SUBCLASSES, ids=lambda c: c.__qualname__)
def test_every_override_of_a_private_method_is_listed(cls: type) -> None:
    overridden = {
        name
        for name in vars(cls)
        if _private(name)
        and name != "_abc_impl"  # what abc.ABCMeta gives every class
        and any(name in vars(k) for k in framework_bases(cls))
    }
    assert overridden <= OVERRIDES.get(cls, set()), overridden - OVERRIDES.get(cls, set())


@pytest.mark.parametrize(("user", "owner", "name"), FOREIGN)
def test_every_private_name_used_on_a_framework_object_is_still_there(
    user: type, owner: type, name: str
) -> None:
    assert name in inspect.getsource(user)
    assert defined_in(owner, name), (
        f"{owner.__qualname__}.{name} is gone (used by {user.__qualname__})"
    )


def test_the_pins_were_checked_at_the_installed_versions() -> None:
    for package, pinned in PINNED.items():
        if pinned is not None:
            assert version(package) == pinned, (
                f"{package} {version(package)} is installed; the private names were checked at"
                f" {pinned}: re-check them (docs/how-to/upgrade.md), then update PINNED"
            )


def test_no_other_code_touches_a_private_name_of_another_object() -> None:
    """Outside those subclasses, no ``x._y`` where ``x`` is not ``self``/``cls`` (the
    project's own classes keep their privates to themselves too)."""
    allowed = {"_replace", "_asdict", "_fields"}  # NamedTuple's public API
    found = []
    for root in ("app", "agents", "tables"):
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found += [
                        f"{path.relative_to(REPO)}:{node.lineno} imports {node.module}.{a.name}"
                        for a in node.names
                        if _private(a.name) and node.module.split(".")[0] in {"faust", "aiokafka"}
                    ]
                if not isinstance(node, ast.Attribute) or not _private(node.attr):
                    continue
                value = node.value
                if isinstance(value, ast.Name) and value.id in {"self", "cls"}:
                    continue
                if isinstance(value, ast.Call) and ast.unparse(value.func) == "super":
                    continue
                if node.attr in allowed:
                    continue
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
    foreign = {f"consumer.{name}" for _, _, name in FOREIGN}
    assert [f for f in found if not any(f.endswith(x) for x in foreign)] == []
