"""Tests of the `modhub` command line."""
