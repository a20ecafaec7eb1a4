"""DispatchFlow: run PreprocessFlow, TrainFlow or InferFlow once per manifest row, each next to its
data, and merge what they did.

    python flows/dispatch.py run --flow train --manifest jobs.csv
    python flows/dispatch.py run --flow infer --manifest s3://b/jobs.csv --output 's3://{bucket}/predictions'
    python flows/dispatch.py run --inputs s3://images-us/raw,s3://images-eu/raw --output 's3://{bucket}/out'
    python flows/dispatch.py run --flow preprocess --manifest jobs.csv --compute batch

Manifest rows are ``region,input[,output][,name=value ...]`` (steps/dispatch/manifest.py); the
region column is optional (without it, as for ``--inputs``, the region selector decides), a missing output
takes ``--output``'s template ({bucket}, {region}, {staging}), and ``name=value`` pairs are the
child flow's parameters (``epochs=90``), checked against its Parameters in start.

Design: one ordinary child run per row, launched with Metaflow's ``Runner`` from a foreach task,
in the row's region, writing to an output there. A row that names no region goes where
``choose_region`` puts that row's flow and size (steps/dispatch/placing.py): moving data costs
$0.02/GB across regions, often more than the compute, so the work usually goes to the data, but
not when another region's price or risk saves more. The report shows each row's region, the
runner-up and the reason. Separate runs rather than one flow
with per-region branches because (1) a Metaflow run has one compute layer setting: per-region Batch
queues need ``--with batch:queue=Q`` per run (and ``AWS_DEFAULT_REGION`` for the Batch API),
(2) each child stays an ordinary run: its own card, resumable and retryable on its own, and
(3) the child flows need no code for this.

A failing row does not stop the others: its status and the child run's own error line (from the
failing task, via the Metaflow client) are recorded, the merged report is written, and the
dispatch then ends failed, naming the rows. Each child run is tagged with its row's identity
(flow, region, input, output, parameters); a rerun with the same manifest reuses the earlier
successful run of each unchanged row ("done earlier") and runs only the rest.
"""

import time
import tomllib
from collections.abc import Mapping
from dataclasses import asdict

from cards import render
from clean_errors import configuration_checked
from dispatch_children import FLOWS, SHARDED, child_parameters, flow_file, row_arguments
from metaflow import Config, FlowSpec, Parameter, Runner, card, config_expr, package_sources, step
from notifying import notify_on_exit

from steps.config_files import config_file
from steps.cost.capacity import live_capacity
from steps.cost.placement import batch_settings
from steps.cost.prices import load_prices
from steps.cost.resources import StepResources, flow_resources
from steps.dispatch.manifest import ManifestRow, load_manifest, row_identity, rows_from_inputs
from steps.dispatch.placing import Selector, flow_defaults, place_row
from steps.dispatch.results import FAILED, REUSED, SUCCEEDED, RowResult, build_report, merged_summary
from steps.errors import ConfigError
from steps.progress import log
from steps.run_outcome import NO_ERROR_OUTPUT, last_error_line, outcome_of

TAG_PREFIX = "dispatch-row:"


def regional_output(template: str, uri: str, region: str, regions: Mapping) -> str:
    """``--output`` with ``{bucket}``, ``{region}`` and ``{staging}`` filled in for one input."""
    bucket = uri[len("s3://") :].split("/", 1)[0] if uri.startswith("s3://") else ""
    staging = regions["regions"].get(region, {}).get("staging_bucket", "")
    try:
        return template.format(bucket=bucket, region=region, staging=staging.rstrip("/"))
    except (KeyError, IndexError, ValueError) as err:  # an unknown {field}, a {0}, an unmatched brace
        raise ConfigError(
            "--output",
            template,
            "a location whose only {fields} are {bucket}, {region} and {staging}",
            f"remove or rename the field ({type(err).__name__}: {err}); write a literal brace as {{{{ or }}}}",
        ) from err


def earlier_success(flow_name: str, tag: str):
    """The newest successful run of ``flow_name`` tagged ``tag`` in this namespace, if any."""
    from metaflow import Flow
    from metaflow.exception import MetaflowNotFound

    try:
        return next((run for run in Flow(flow_name).runs(tag) if run.successful), None)
    except MetaflowNotFound:
        return None


# config/ travels in the code package too, so remote tasks can read it like a local run.
@package_sources("../config", suffixes=[".toml"])
@notify_on_exit
class DispatchFlow(FlowSpec):
    """Run a flow once per manifest row, next to each row's data, and merge the reports."""

    config = Config("config", default=config_file("dispatch.toml"), parser=tomllib.loads)
    regions = Config("regions", default=config_file("regions.toml"), parser=tomllib.loads)
    prices = Config("prices", default=config_file("prices.toml"), parser=tomllib.loads)
    throughput = Config("throughput", default=config_file("throughput.toml"), parser=tomllib.loads)

    child_flow = Parameter("flow", default="preprocess", help=f"The flow each row runs: {', '.join(FLOWS)}.")
    manifest = Parameter("manifest", default="", help="File or s3:// object: region,input[,output][,name=value ...].")
    inputs = Parameter("inputs", default="", help="Instead of --manifest: comma-separated input locations.")
    output = Parameter(
        "output", default="", help="Output of rows without one; {bucket}, {region} and {staging} are filled in."
    )
    compute = Parameter("compute", default="local", help="local: run here; batch: each run on its region's queue.")
    notify_url = Parameter(
        "notify", default=config_expr("config.notify_url"), help="POST the dispatch's outcome here when it ends."
    )

    @step
    def start(self):
        self.started_at = time.time()
        with configuration_checked():
            self.plan_rows()
        for p in self.row_plan:
            place = p["place"]
            why = f" ({place['decided_by']}: {place['reason']})" if place["reason"] else ""
            log(f"line {p['line']}: {self.child_flow} in {p['region']}: {p['input']} -> {p['output']}{why}")
        self.next(self.run_row, foreach="row_plan")

    def plan_rows(self) -> None:
        """Check the settings and plan one child run per row into ``row_plan``; ConfigError for anything unusable."""
        if self.compute not in ("local", "batch"):
            raise ConfigError("--compute", self.compute, "local or batch", "pass --compute local or --compute batch")
        if self.child_flow not in FLOWS:
            raise ConfigError("--flow", self.child_flow, " or ".join(FLOWS), "pass one of them")
        if bool(self.manifest) == bool(self.inputs):
            raise ConfigError("--manifest", self.manifest, "exactly one of --manifest or --inputs", "pass one")
        rows = load_manifest(self.manifest) if self.manifest else rows_from_inputs(self.inputs)
        parameters = child_parameters(self.child_flow)
        # `--with batch:queue=` puts every step of a child run on one queue: its work step's kind
        # (CPU for preprocess, GPU for train and infer, as their configs ask) decides which.
        resources = flow_resources(self.child_flow)
        selector = self.region_selector(resources, len(rows))
        self.row_plan = [self.plan_row(row, parameters, selector) for row in rows]
        outputs = [p["output"] for p in self.row_plan]
        if len(set(outputs)) != len(outputs):
            raise ConfigError(
                "--output",
                self.output,
                "a distinct output per input",
                "use {bucket} or {region} in --output (or an output column) so runs do not overwrite each other",
            )

    def region_selector(self, resources: StepResources, rows: int) -> Selector:
        """Prices (live when AWS answers) and capacity, fetched once for every row."""
        prices = load_prices(self.prices, keep=lambda q: resources.tasks_per_instance(q.shape) > 0)
        return Selector(
            self.child_flow,
            flow_defaults(self.child_flow),
            resources,
            self.throughput,
            self.regions,
            prices,
            live_capacity(prices, prices.instance_types, rows),
        )

    def plan_row(self, row: ManifestRow, parameters: dict, selector: Selector) -> dict:
        if not (row.output or self.output):
            raise ConfigError(
                f"--manifest line {row.line}", row.input, "an output column or --output", "add one of them"
            )
        arguments = row_arguments(self.child_flow, row, parameters)
        place = place_row(row.input, row.region, arguments, selector)
        region = place.region
        env, decospecs = (
            batch_settings(region, self.regions, selector.resources) if self.compute == "batch" else ({}, [])
        )
        output = row.output or regional_output(self.output, row.input, region, self.regions)
        return {
            "line": row.line,
            "region": region,
            "place": place.to_plain(),
            "input": row.input,
            "output": output,
            "parameters": arguments,
            # The manifest's own region: a rerun reuses a done row even if prices now choose another.
            "tag": TAG_PREFIX + row_identity(self.child_flow, row.region, row.input, output, arguments),
            "env": env,
            "with": decospecs,
        }

    @step
    def run_row(self):
        plan = self.input
        row = {k: plan[k] for k in ("line", "region", "place", "input", "output", "parameters")}
        earlier = earlier_success(FLOWS[self.child_flow], plan["tag"])
        if earlier is not None:
            result = RowResult(**row, status=REUSED, run=earlier.pathspec, summary=dict(earlier.data.summary))
        else:
            result = self.run_child(plan, row)
        log(f"line {result.line}: {result.status} {result.run} {result.error}".rstrip())
        self.row_result = asdict(result)
        self.next(self.join)

    def run_child(self, plan: dict, row: dict) -> RowResult:
        """One ordinary child run; its failure becomes this row's result, never this task's."""
        with Runner(flow_file(self.child_flow), show_output=False, env=plan["env"], decospecs=plan["with"]) as runner:
            try:
                running = runner.run(
                    input=plan["input"], output=plan["output"], tags=[plan["tag"]], **plan["parameters"]
                )
            except RuntimeError as error:  # the child exited before it had a run to read
                return RowResult(**row, status=FAILED, error=last_error_line(str(error)))
            if running.status == "successful":
                return RowResult(**row, status=SUCCEEDED, run=running.run.pathspec, summary=running.run.data.summary)
            outcome = outcome_of(running.run)
            # A task that died without a word (killed, aborted at exit): the child's own log tail.
            reason = outcome.error if outcome.error != NO_ERROR_OUTPUT else last_error_line(running.stderr)
            error = f"step {outcome.failed_step}: {reason}" if outcome.failed_step else reason
            return RowResult(**row, status=FAILED, run=running.run.pathspec, error=error)

    @card(type="blank", id="report")
    @step
    def join(self, inputs):
        self.merge_artifacts(inputs, include=["started_at"])
        results = sorted((RowResult(**i.row_result) for i in inputs), key=lambda r: r.line)
        self.rows = [asdict(r) for r in results]
        stats = SHARDED.get(self.child_flow)
        merged = merged_summary(results, time.time() - self.started_at, stats) if stats else None
        self.summary = merged.to_artifact() if merged else None
        report = build_report(FLOWS[self.child_flow], results, merged)
        self.headline = report.headline
        render(report)
        self.next(self.end)

    @step
    def end(self):
        log(self.headline)
        failed = [RowResult(**r) for r in self.rows if r["status"] == FAILED]
        for row in failed:
            log(f"{row.describe()} failed: {row.error}")
        if failed:
            raise RuntimeError(
                f"{len(failed)} of {len(self.rows)} rows failed ({', '.join(r.describe() for r in failed)}); "
                "the others are done: rerun the same command to redo only the failed rows"
            )


if __name__ == "__main__":
    DispatchFlow()
