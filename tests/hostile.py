"""hack/hostile_check.py loaded as a module: the tests run the very checks that the script runs
against `make run`."""

from __future__ import annotations

import importlib.util

from tests.servers import ROOT

_spec = importlib.util.spec_from_file_location("hostile_check", ROOT / "hack" / "hostile_check.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)
