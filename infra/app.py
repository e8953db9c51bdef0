"""`cdk synth` / `cdk deploy` entry point (cdk.json's "app"); `make synth` runs it too."""

from infra.app import build_app

build_app().synth()
