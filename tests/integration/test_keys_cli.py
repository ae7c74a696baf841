"""`darkroom keys create | list | revoke` against a stack's keys table: keys are shown once, listed by id only,
and a revoked key stops working."""

from __future__ import annotations

import json

import pytest

from darkroom import tenants
from darkroom.tenants import hash_key, key_id
from darkroom_local.cli import main
from darkroom_local.stack import LocalStack
from tests.support import http_event


def keys_table(stack: LocalStack) -> str:
    return stack.template.attributes["ApiKeysTable"]["Ref"]


def can_list_jobs(stack: LocalStack, api_key: str) -> int:
    return int(stack.functions["ApiFunction"].invoke(http_event("GET", "/v1/jobs", api_key=api_key))["statusCode"])


def test_create_list_and_revoke_a_key(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    table = keys_table(stack)
    # Given a key created for a new tenant
    assert main(["keys", "create", "--tenant", "acme", "--name", "ci", "--table", table]) == 0
    created = capsys.readouterr()
    api_key = created.out.strip()
    assert api_key.startswith("dr_") and key_id(hash_key(api_key)) in created.err
    assert can_list_jobs(stack, api_key) == 200
    # When it is listed
    assert main(["keys", "list", "--tenant", "acme", "--json", "--table", table]) == 0
    listed = json.loads(capsys.readouterr().out)
    # Then the listing names it by id, never by the key or its hash
    assert [(k["id"], k["tenant"], k["name"], k["status"]) for k in listed] == [
        (key_id(hash_key(api_key)), "acme", "ci", "active")
    ]
    assert api_key not in json.dumps(listed) and hash_key(api_key) not in json.dumps(listed)
    # When it is revoked (and the warm function's cache has expired)
    assert main(["keys", "revoke", listed[0]["id"], "--table", table]) == 0
    assert "revoked" in capsys.readouterr().out
    tenants._cache.clear()
    # Then the API refuses it, and the listing says so
    assert can_list_jobs(stack, api_key) == 401
    main(["keys", "list", "--tenant", "acme", "--json", "--table", table])
    assert json.loads(capsys.readouterr().out)[0]["status"] == "revoked"


def test_revoking_an_unknown_id_fails_clearly(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "revoke", "key_0000000000000000", "--table", keys_table(stack)]) == 1
    assert "no key key_0000000000000000" in capsys.readouterr().err


def test_a_bad_tenant_name_is_refused_before_anything_is_stored(stack: LocalStack) -> None:
    with pytest.raises(ValueError, match="tenant must be"):
        main(["keys", "create", "--tenant", "Not A Tenant", "--table", keys_table(stack)])


def test_a_tenants_own_quotas_are_set_shown_and_enforced(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    table = stack.template.attributes["TenantsTable"]["Ref"]
    api_key = tenants.create_api_key("cli-quota")
    assert main(["tenants", "set", "cli-quota", "--budget", "0.01", "--max-in-flight", "3", "--table", table]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["monthly_budget_usd"] == 0.01 and shown["max_in_flight"] == 3
    body = {"prompt": "too dear", "quality": "medium"}
    answer = stack.functions["ApiFunction"].invoke(
        http_event("POST", "/v1/images/generations", api_key=api_key, body=body)
    )
    assert answer["statusCode"] == 402 and json.loads(answer["body"])["error"]["code"] == "budget_exceeded"
    # Back to the deployment's default (no budget): the same request is accepted
    assert main(["tenants", "set", "cli-quota", "--default", "monthly_budget_usd", "--table", table]) == 0
    assert json.loads(capsys.readouterr().out)["monthly_budget_usd"] is None
    answer = stack.functions["ApiFunction"].invoke(
        http_event("POST", "/v1/images/generations", api_key=api_key, body=body)
    )
    assert answer["statusCode"] == 202


@pytest.mark.parametrize(
    "flags", [["--budget", "nan"], ["--budget", "-5"], ["--budget", "lots"], ["--per-minute", "-1"]]
)
def test_a_quota_that_makes_no_sense_is_refused_before_anything_is_stored(stack: LocalStack, flags: list[str]) -> None:
    table = stack.template.attributes["TenantsTable"]["Ref"]
    with pytest.raises(SystemExit) as refused:
        main(["tenants", "set", "cli-nonsense", *flags, "--table", table])
    assert "--" in str(refused.value)
    from darkroom import quotas

    assert quotas.limits_for("cli-nonsense") == quotas.TenantLimits(1000, 600, None)
