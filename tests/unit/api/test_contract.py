"""The contract is the only list of services and methods; the dispatcher refuses to disagree with it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from lobwife.v1.services import SERVICE_NAMES, SERVICES
from lobwife_server import app
from lobwife_server.api.rpc import ContractError, Dispatcher

ROOT = Path(__file__).resolve().parents[3]


def test_generated_list_has_every_service_of_every_proto() -> None:
    expected = set()
    for proto in (ROOT / "proto" / "lobwife" / "v1").glob("*.proto"):
        module = importlib.import_module(f"lobwife.v1.{proto.stem}_pb2")
        expected |= {s.full_name for s in module.DESCRIPTOR.services_by_name.values()}
    assert set(SERVICE_NAMES) == expected
    assert len(SERVICE_NAMES) == len(SERVICES) == len(expected)


class _Tasks:
    async def GetTask(self, request: Any, ctx: Any) -> Any:
        raise NotImplementedError

    async def GetTaks(self, request: Any, ctx: Any) -> Any:  # the typo
        raise NotImplementedError

    def helper(self) -> None:  # not RPC-looking: fine
        pass


def test_a_method_the_contract_lacks_is_refused() -> None:
    with pytest.raises(ContractError, match=r"_Tasks\.GetTaks is not an RPC of lobwife\.v1\.TaskService"):
        Dispatcher({"lobwife.v1.TaskService": _Tasks()})


def test_a_service_the_contract_lacks_is_refused() -> None:
    with pytest.raises(ContractError, match=r"lobwife\.v1\.TaskServices is not a service of the contract"):
        Dispatcher({"lobwife.v1.TaskServices": object()})


class _Get:
    async def GetTask(self, request: Any, ctx: Any) -> Any:
        raise NotImplementedError


def test_check_complete_names_each_disagreement() -> None:
    d = Dispatcher({"lobwife.v1.TaskService": _Get()})
    with pytest.raises(ContractError) as e:
        d.check_complete({"/lobwife.v1.TaskService/GetTask": "x", "lobwife.v1.NoService": "y"})
    text = str(e.value)
    assert "/lobwife.v1.TaskService/ListTasks is neither implemented nor listed" in text
    assert "/lobwife.v1.TaskService/GetTask is implemented but listed as not built yet" in text
    assert "lobwife.v1.NoService is listed as not built yet, but the contract has no such RPC" in text
    assert "/lobwife.v1.CostService/" in text  # a whole service left out


def test_not_built_covers_exactly_what_the_running_server_lacks() -> None:
    # The app's table against the contract: every entry names a real service or RPC.
    methods = {f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods} | set(SERVICE_NAMES)
    assert set(app.NOT_BUILT) <= methods
    assert all(why for why in app.NOT_BUILT.values())
