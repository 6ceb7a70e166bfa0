"""Tests of the manifest contract: models, checks, JSON Schema, folder mode."""
