"""Reading template.yaml for the local stack: resources, functions, their events and environments.

Only the intrinsic functions darkroom's template uses are resolved (Ref, GetAtt, Sub, Join, If/Equals on
parameters); anything else fails loudly rather than wiring the local stack differently from AWS.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(name: str):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {"Ref": value} if name == "Ref" else {f"Fn::{name}": value}

    return construct


_TAGS = ("Ref", "GetAtt", "Sub", "Join", "If", "Equals", "Not", "And", "Or", "Contains", "Select", "Split", "FindInMap")
for _name in (*_TAGS, "ImportValue"):
    _CfnLoader.add_constructor(f"!{_name}", _tag(_name))


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as a fresh dict (callers may change theirs), parsed once per version of the file: parsing the
    whole template takes a noticeable fraction of a second, and tests build many stacks and templates."""
    text = path.read_text()
    return copy.deepcopy(_parsed(text))


@functools.lru_cache(maxsize=4)
def _parsed(text: str) -> dict[str, Any]:
    return dict(yaml.load(text, Loader=_CfnLoader))


def parameter_problem(name: str, value: str, spec: dict[str, Any]) -> str | None:
    """What CloudFormation would refuse in a parameter's value, as one sentence; None when it takes it."""
    if spec.get("AllowedValues") and value not in [str(v) for v in spec["AllowedValues"]]:
        return f"{name} must be one of {', '.join(str(v) for v in spec['AllowedValues'])}, not {value!r}"
    if spec.get("Type") == "Number":
        # CloudFormation's numbers: digits, a sign and a point; not Python's `1_000`, `nan` or `1e3`.
        if not re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", value):
            return f"{name} must be a number, not {value!r}"
        number = float(value)
        if "MinValue" in spec and number < float(spec["MinValue"]):
            return f"{name} must be at least {spec['MinValue']}, not {value}"
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            return f"{name} must be at most {spec['MaxValue']}, not {value}"
    if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
        return f"{name}={value!r}: {spec.get('ConstraintDescription', 'must match ' + spec['AllowedPattern'])}"
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        return f"{name} must be at most {spec['MaxLength']} characters"
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        return f"{name} must be at least {spec['MinLength']} characters"
    return None


@dataclass
class FunctionSpec:
    logical_id: str
    code_dir: Path
    handler: str
    timeout_s: int
    environment: dict[str, str]
    memory_mb: int = 128
    http_routes: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    sqs_events: list[dict[str, Any]] = field(default_factory=list)  # resolved SQS event properties
    schedules: list[str] = field(default_factory=list)  # rate(...) / cron(...) expressions


class LocalTemplate:
    """template.yaml with parameters applied; `attributes` maps logical ids to their physical values once created."""

    def __init__(
        self, parameters: dict[str, str] | None = None, path: Path = TEMPLATE, *, checked: bool = False
    ) -> None:
        """`checked`: refuse values CloudFormation would refuse (AllowedValues, MinValue...). darkroom's own tests
        leave it off to run with waits shorter than a deployment allows."""
        self.doc = load_template(path)
        self.parameters = {name: str(spec.get("Default", "")) for name, spec in self.doc.get("Parameters", {}).items()}
        unknown = set(parameters or {}) - set(self.parameters)
        if unknown:
            raise ValueError(f"template.yaml has no parameter(s) {sorted(unknown)}")
        self.parameters.update({k: str(v) for k, v in (parameters or {}).items()})
        problems = [
            problem
            for name, value in (parameters or {}).items()
            if checked and (problem := parameter_problem(name, str(value), self.doc["Parameters"][name]))
        ]
        if problems:
            raise ValueError("; ".join(problems))
        self.pseudo = {
            "AWS::Region": "us-east-1",
            "AWS::AccountId": "123456789012",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::Partition": "aws",
            "AWS::StackName": "darkroom-local",
        }
        # logical id -> {"Ref": ..., "Arn": ..., ...}, filled in by the stack as it creates resources.
        self.attributes: dict[str, dict[str, str]] = {}

    def check_rules(self) -> None:
        """The template's Rules, as CloudFormation checks them before it deploys: ValueError on a broken one."""
        for name, rule in self.doc.get("Rules", {}).items():
            if "RuleCondition" in rule and not self._truth(rule["RuleCondition"]):
                continue
            for assertion in rule.get("Assertions", []):
                if not self._truth(assertion["Assert"]):
                    raise ValueError(f"template rule {name}: {assertion.get('AssertDescription', 'failed')}")

    def _truth(self, value: Any) -> Any:
        """Rule functions over parameters: Equals, Contains, And, Or, Not, Ref."""
        if not isinstance(value, dict):
            return [self._truth(v) for v in value] if isinstance(value, list) else str(value)
        ((key, arg),) = value.items()
        if key == "Ref":
            return self._ref(arg)
        args = [self._truth(a) for a in arg]
        if key == "Fn::Equals":
            return args[0] == args[1]
        if key == "Fn::Contains":
            return args[1] in args[0]
        if key == "Fn::And":
            return all(args)
        if key == "Fn::Or":
            return any(args)
        if key == "Fn::Not":
            return not args[0]
        raise NotImplementedError(f"the local stack does not check rules using {key}")

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return dict(self.doc["Resources"])

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(v) for k, v in value.items()}
        ((key, arg),) = value.items()
        if key == "Ref":
            return self._ref(arg)
        if key == "Fn::GetAtt":
            logical, attribute = arg
            return self.attributes[logical][attribute]
        if key == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(self._sub_var(m.group(1))), arg)
        if key == "Fn::Join":
            return arg[0].join(str(self.resolve(v)) for v in arg[1])
        if key.startswith("Fn::"):
            raise NotImplementedError(f"the local stack does not resolve {key}")
        return {key: self.resolve(arg)}

    def _ref(self, name: str) -> Any:
        if name in self.parameters:
            if self.doc["Parameters"][name].get("Type") == "CommaDelimitedList":
                return [item.strip() for item in self.parameters[name].split(",")]
            return self.parameters[name]
        if name in self.pseudo:
            return self.pseudo[name]
        return self.attributes[name]["Ref"]

    def _sub_var(self, name: str) -> str:
        if "." in name:
            logical, attribute = name.split(".", 1)
            return self.attributes[logical][attribute]
        return self._ref(name)

    def functions(self) -> list[FunctionSpec]:
        globals_ = self.doc.get("Globals", {}).get("Function", {})
        specs = []
        for logical_id, resource in self.of_type("AWS::Serverless::Function").items():
            props = resource["Properties"]
            env = {
                **self.resolve(globals_.get("Environment", {}).get("Variables", {})),
                **self.resolve(props.get("Environment", {}).get("Variables", {})),
            }
            spec = FunctionSpec(
                logical_id=logical_id,
                code_dir=REPO / props["CodeUri"],
                handler=props["Handler"],
                timeout_s=int(self.resolve(props.get("Timeout", globals_.get("Timeout", 3)))),
                environment={k: str(v) for k, v in env.items()},
                memory_mb=int(self.resolve(props.get("MemorySize", globals_.get("MemorySize", 128)))),
            )
            for event in props.get("Events", {}).values():
                event_props = self.resolve(event["Properties"])
                if event["Type"] == "HttpApi":
                    spec.http_routes.append((event_props["Method"].upper(), event_props["Path"]))
                elif event["Type"] == "SQS":
                    spec.sqs_events.append(event_props)
                elif event["Type"] in ("Schedule", "ScheduleV2"):
                    spec.schedules.append(event_props.get("Schedule") or event_props["ScheduleExpression"])
                else:
                    raise NotImplementedError(f"the local stack does not run {event['Type']} events yet")
            specs.append(spec)
        return specs
