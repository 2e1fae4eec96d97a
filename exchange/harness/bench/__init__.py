"""The benchmark of issue 7 (`scripts/bench`): the exchange beside this machine's ceiling.

`measures` holds the measures (backlog drain, submit throughput, latency,
fan-out, bulk, store growth; peak memory in each), `nodes` the federations they
run on, `bare` the bare gRPC processes that give each ceiling, `fill` the
synthetic rows of the store-growth measure, `results` the table and JSON.
"""

from exchange.harness.bench.measures import MEASURES, Settings
from exchange.harness.bench.nodes import BenchError
from exchange.harness.bench.results import Figure, MeasureResult, print_table, write_json

__all__ = [
    "MEASURES",
    "BenchError",
    "Figure",
    "MeasureResult",
    "Settings",
    "print_table",
    "write_json",
]
