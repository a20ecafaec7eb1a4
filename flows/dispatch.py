"""DispatchFlow: preprocess data spread over regional buckets where each part lives, then merge.

    python flows/dispatch.py run --inputs s3://images-us/raw,s3://images-eu/raw \\
        --output 's3://{bucket}/preprocessed'
    python flows/dispatch.py run --inputs ... --output '{staging}/preprocessed' --compute batch

Design: one ordinary PreprocessFlow run per input location, launched with Metaflow's ``Runner``
from a foreach task, in the region that holds the input (``steps.cost.placement.data_region``), writing
to an output in that region. Moving data costs $0.02/GB across regions, usually more than the
compute, so the work goes to the data, not the other way round. Separate runs rather than one flow
with per-region branches because (1) a Metaflow run has one compute layer setting: per-region Batch
queues need ``--with batch:queue=Q`` per run (and ``AWS_DEFAULT_REGION`` for the Batch API),
(2) each regional run stays an ordinary PreprocessFlow run: its own card, resumable on its own,
retryable without touching the other regions, and (3) the regional flow needs no code for this.
Two inputs in one region give two runs there (PreprocessFlow takes one ``--input``).

The merged ``summary`` adds up the regional summaries; ``region_runs`` lists each run's region,
input, output and pathspec, and the card shows both.
"""

import time
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from cards import render
from metaflow import Config, FlowSpec, Parameter, Runner, card, package_sources, step

from steps.config_files import config_file
from steps.cost.placement import batch_settings, data_region, input_sizes
from steps.errors import ConfigError
from steps.progress import log
from steps.report import Report, Table
from steps.sharding.summary import RunSummary

ROOT = Path(__file__).resolve().parent.parent
PREPROCESS = str(ROOT / "flows" / "preprocess.py")


def regional_output(template: str, uri: str, region: str, regions: Mapping) -> str:
    """``--output`` with ``{bucket}``, ``{region}`` and ``{staging}`` filled in for one input."""
    bucket = uri[len("s3://") :].split("/", 1)[0] if uri.startswith("s3://") else ""
    staging = regions["regions"].get(region, {}).get("staging_bucket", "")
    return template.format(bucket=bucket, region=region, staging=staging.rstrip("/"))


# config/ travels in the code package too, so remote tasks can read it like a local run.
@package_sources("../config", suffixes=[".toml"])
class DispatchFlow(FlowSpec):
    """Run PreprocessFlow once per regional input location, next to its data, and merge the reports."""

    regions = Config("regions", default=config_file("regions.toml"), parser=tomllib.loads)

    inputs = Parameter("inputs", required=True, help="Comma-separated input locations, e.g. s3://b-us/x,s3://b-eu/x.")
    output = Parameter(
        "output",
        required=True,
        help="Output location per input; {bucket}, {region} and {staging} (regions.toml) are filled in.",
    )
    compute = Parameter("compute", default="local", help="local: run here; batch: each run on its region's queue.")

    @step
    def start(self):
        self.started_at = time.time()
        uris = [u.strip() for u in self.inputs.split(",") if u.strip()]
        if self.compute not in ("local", "batch"):
            raise ConfigError("--compute", self.compute, "local or batch", "pass --compute local or --compute batch")
        if not uris:
            raise ConfigError("--inputs", self.inputs, "comma-separated input locations", "pass --inputs")
        sizes = input_sizes(uris)
        self.region_plan = []
        for uri in uris:
            region = data_region(uri, self.regions)
            env, decospecs = batch_settings(region, self.regions) if self.compute == "batch" else ({}, [])
            self.region_plan.append(
                {
                    "region": region,
                    "input": uri,
                    "output": regional_output(self.output, uri, region, self.regions),
                    "gb": round(sizes[uri] / 1e9, 3),
                    "env": env,
                    "with": decospecs,
                }
            )
        outputs = [p["output"] for p in self.region_plan]
        if len(set(outputs)) != len(outputs):
            raise ConfigError(
                "--output",
                self.output,
                "a distinct output per input",
                "use {bucket} or {region} in --output so runs do not overwrite each other",
            )
        for p in self.region_plan:
            log(f"{p['region']}: {p['input']} ({p['gb']} GB) -> {p['output']}")
        self.next(self.run_region, foreach="region_plan")

    @step
    def run_region(self):
        plan = self.input
        with Runner(PREPROCESS, show_output=False, env=plan["env"], decospecs=plan["with"]) as runner:
            running = runner.run(input=plan["input"], output=plan["output"])
            if running.status != "successful":
                raise RuntimeError(
                    f"PreprocessFlow for {plan['region']} ({plan['input']}) ended {running.status}; "
                    f"its log: {running.stderr.strip().splitlines()[-1:]}"
                )
            self.region_run = {**plan, "run": running.run.pathspec, "summary": running.run.data.summary}
        log(f"{plan['region']}: {running.run.pathspec} preprocessed {self.region_run['summary']['images']} images")
        self.next(self.join)

    @card(type="blank", id="report")
    @step
    def join(self, inputs):
        self.merge_artifacts(inputs, include=["started_at"])
        self.region_runs = sorted((i.region_run for i in inputs), key=lambda r: (r["region"], r["input"]))
        summaries = [RunSummary.from_artifact(r["summary"]) for r in self.region_runs]
        # Regional runs ran side by side: throughput is over the dispatch's whole wall time.
        merged = replace(sum(summaries, RunSummary()), seconds=time.time() - self.started_at)
        self.summary = merged.to_artifact()
        render(
            Report(
                "Multi-region preprocessing",
                merged.headline("Preprocessed", "one output per region"),
                [
                    Table(
                        "Regional runs",
                        ["region", "input", "GB", "output", "images", "ok", "rejected", "seconds", "run"],
                        [
                            [
                                r["region"],
                                r["input"],
                                r["gb"],
                                r["output"],
                                s.images,
                                s.processed,
                                s.rejected,
                                round(s.seconds, 1),
                                r["run"],
                            ]
                            for r, s in zip(self.region_runs, summaries, strict=True)
                        ],
                    ),
                ],
            )
        )
        self.next(self.end)

    @step
    def end(self):
        outputs = ", ".join(r["output"] for r in self.region_runs)
        log(RunSummary.from_artifact(self.summary).headline("Preprocessed", outputs))
        log(f"per-region runs: {', '.join(r['run'] for r in self.region_runs)}")


if __name__ == "__main__":
    DispatchFlow()
