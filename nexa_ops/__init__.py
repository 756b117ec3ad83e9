"""nexa-ops: launch, sweep, sync, containers, cost and teardown for ML clusters.

``import nexa_ops`` is cheap: the public API below is imported on first use, so the CLI and
the compute-node worker start fast.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

_API = {
    # errors: one small hierarchy (see nexa_ops.errors)
    "NexaError": "errors",
    "ConfigError": "errors",
    "ToolError": "errors",
    "ToolMissing": "errors",
    "Refused": "errors",
    "WaitTimeout": "errors",
    # configuration
    "NexaConfig": "config",
    "SweepDefinition": "config",
    "Resources": "config",
    "load_config": "config",
    "load_sweep": "config",
    # sweeps
    "SweepArtifacts": "sweep.plan",
    "launch_slurm_sweep": "sweep.submit",
    # launch
    "LaunchResult": "launcher.run",
    "launch": "launcher.run",
    # containers
    "ContainerResult": "containers",
    "BuildResult": "containers",
    "run_container": "containers",
    "build_image": "containers",
    # sync
    "SyncResult": "sync",
    "sync_repository": "sync",
    # cost
    "estimate_cost": "cost.estimate",
    "cost_report": "cost.report",
    "campaign_spend": "cost.report",
    "check_budget": "cost.report",
    "reconcile": "cost.reconcile",
    # monitoring
    "MonitorPlan": "monitor",
    "write_monitoring_config": "monitor",
    # teardown
    "TeardownResult": "campaign_teardown",
    "teardown": "campaign_teardown",
    # following a run
    "RunStatus": "track",
    "status": "track",
    "wait": "track",
    "cancel": "control",
    "resubmit_failed": "control",
    "resume": "sweep.halving",
    "logs": "track",
    # results: which configuration won
    "load_results": "results",
    "best_config": "results",
}

__all__ = sorted(_API) + ["__version__"]


class _API_Module(types.ModuleType):
    """This package's class: a public name is imported from its home on first use.

    (PEP 562's module ``__getattr__`` does the same from Python 3.7; nexa.pyz also runs on
    3.6, where only the module's class can.)"""

    def __getattr__(self, name: str) -> "object":
        home = _API.get(name)
        if home is None:
            raise AttributeError(f"module 'nexa_ops' has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        setattr(self, name, value)
        return value

    def __dir__(self) -> "list":
        return __all__


sys.modules[__name__].__class__ = _API_Module
