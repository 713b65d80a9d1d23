"""Monte-Carlo sweeps: a grid of workloads x chips x parameter overrides x seeds, run on dask.

spec = load_spec("sweep.yaml")
with Client(local_cluster(2)) as client:
    run = run_sweep(spec, "results.parquet", client)
table = summarize(ResultsStore("results.parquet").frame(), run.points)

See docs/sweeps.md for the spec and results formats.
"""

from crossbar.sweep.grid import expand, override
from crossbar.sweep.point import Point, evaluate_point
from crossbar.sweep.runner import SweepRun, local_cluster, run_sweep
from crossbar.sweep.spec import SpecError, SweepSpec, load_spec, parse_spec
from crossbar.sweep.store import ResultsStore
from crossbar.sweep.summary import format_summary, summarize
from crossbar.sweep.workloads import METRICS, Workload, WorkloadRef, registered

__all__ = [
    "METRICS",
    "Point",
    "ResultsStore",
    "SpecError",
    "SweepRun",
    "SweepSpec",
    "Workload",
    "WorkloadRef",
    "evaluate_point",
    "expand",
    "registered",
    "format_summary",
    "load_spec",
    "local_cluster",
    "override",
    "parse_spec",
    "run_sweep",
    "summarize",
]
