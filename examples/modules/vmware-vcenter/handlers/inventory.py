"""A small fake vCenter inventory, read from inventory.json beside the module."""

import json
from pathlib import Path

INVENTORY = Path(__file__).resolve().parent.parent / "inventory.json"


def load_vms():
    return json.loads(INVENTORY.read_text())
