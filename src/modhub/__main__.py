"""Run the `modhub` command as `python -m modhub`."""

from modhub.cli import main

main()
