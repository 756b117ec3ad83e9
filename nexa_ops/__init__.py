"""nexa-ops: launch, sweep, sync, containers, cost and teardown for ML clusters.

``import nexa_ops`` is cheap: the public API below is imported on first use (PEP 562), so the
CLI and the compute-node worker start fast.
"""

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


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'nexa_ops' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
