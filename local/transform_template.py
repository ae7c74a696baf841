"""Transform template.yaml with aws-sam-translator into plain CloudFormation, for cfn-lint to check.

Runs in the template tooling environment (.venv-tools), apart from darkroom's own: aws-sam-translator pins its own
pydantic. Usage: python local/transform_template.py template.yaml build/template.cfn.json
"""

import json
import os
import sys
from pathlib import Path

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """darkroom names no AWS managed policies by name, so the translator never needs IAM to look them up."""

    def load(self) -> dict[str, str]:
        return {}


def as_packaged(template: dict, root: Path) -> dict:
    """Point local code paths at S3, as `sam package` would, since the translator accepts only S3 URIs; a state
    machine's definition file goes in inline, so cfn-lint checks the definition too."""
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://darkroom-artifacts/{props[key].strip('/')}.zip"
        if isinstance(props.get("DefinitionUri"), str) and not props["DefinitionUri"].startswith("s3://"):
            props["Definition"] = json.loads((root / props.pop("DefinitionUri")).read_text())
    return template


def definitions_as_objects(template: dict) -> None:
    """The translator turns an inline definition into a DefinitionString (lines joined by Fn::Join), which cfn-lint
    does not look into; CloudFormation takes the same definition as a Definition object, which cfn-lint checks
    against the Amazon States Language."""
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        joined = (
            props.get("DefinitionString", {}).get("Fn::Join")
            if resource["Type"] == "AWS::StepFunctions::StateMachine"
            else None
        )
        if joined and joined[0] == "\n" and all(isinstance(line, str) for line in joined[1]):
            props["Definition"] = json.loads("\n".join(joined[1]))
            del props["DefinitionString"]


def main(source: str, target: str) -> None:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the translator needs a region to name ARNs
    template = as_packaged(yaml_parse(Path(source).read_text()), Path(source).resolve().parent)
    params = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
    # Metadata carried onto the generated resources: checkov reads its skips (with their reasons) there.
    transformed = transform(template, params, NoManagedPolicies(), passthrough_metadata=True)
    definitions_as_objects(transformed)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(json.dumps(transformed, indent=2))
    print(f"{source}: transformed into {target} ({len(transformed['Resources'])} resources)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
