"""PreprocessFlow: resize every image and extract its edge map, sharded by hex prefix.

python flows/preprocess.py run --input DIR_OR_S3 --output DIR_OR_S3
python flows/preprocess.py run --with batch --input s3://... --output s3://...
"""

import tomllib
from dataclasses import asdict

from cards import render
from metaflow import Config, Parameter, card, config_expr, package_sources, step
from notifying import notify_on_exit
from parameter_types import POSITIVE
from sharded import ShardedFlow, shard_step

from steps.config_files import config_file
from steps.errors import ConfigError
from steps.io.input_format import input_format
from steps.io.storage import open_storage
from steps.io.validation import check_names
from steps.preprocess.files import PREPROCESS_FILES
from steps.stats.summary import RunSummary


# config/ travels in the code package too, so remote tasks can read it like a local run.
@package_sources("../config", suffixes=[".toml"])
@notify_on_exit
class PreprocessFlow(ShardedFlow):
    """Decode each image once; write a resized JPEG and a Sobel edge map; report rejects."""

    _VERB = "Preprocessed"
    _SHARD_FILES = PREPROCESS_FILES

    config = Config("config", default=config_file("preprocess.toml"), parser=tomllib.loads)

    size = Parameter("size", type=POSITIVE, default=config_expr("config.size"), help="Longest side of resized images.")
    output_format = Parameter(
        "format",
        default=config_expr("config.format"),
        help="files: resized/ and edges/; webdataset: also tar shards of samples under webdataset/.",
    )
    compute_device = Parameter(
        "device",
        default=config_expr("config.device"),
        help="cpu: Pillow on CPU threads; cuda: decode, resize, edges and JPEG encode on the GPU (give the "
        "task one: resources.gpu in the config, or `--with batch:gpu=1`).",
    )

    def check_settings(self) -> None:
        # Arrow, Pillow and numpy load in the steps that use them, not with the flow file (which
        # every task and card refresh imports).
        from steps.preprocess.shard import PREPROCESS_DEVICES
        from steps.preprocess.webdataset import FORMATS

        super().check_settings()
        check_names("--device", [self.compute_device], PREPROCESS_DEVICES, "cpu or cuda", "--device")
        if self.output_format not in FORMATS:
            raise ConfigError("--format", self.output_format, " or ".join(FORMATS), "pass --format webdataset or files")

    @shard_step(config)
    def process_shard(self):
        from steps.preprocess.shard import preprocess_shard, tensor_device
        from steps.preprocess.webdataset import WebDatasetPacker, read_label_map

        with self.shard_task() as shard:
            pack = None
            if self.output_format == "webdataset":
                pack = WebDatasetPacker(
                    shard.target,
                    self.input,
                    shard.keys,
                    shard.inputs.chunk_size(self.chunk_size),
                    read_label_map(shard.source),
                    self.threads,
                    unit_of=shard.inputs.unit_of,
                )
            outcome = preprocess_shard(
                name=self.input,
                keys=shard.keys,
                source=shard.source,
                target=shard.target,
                size=self.size,
                threads=self.threads,
                chunk_size=self.chunk_size,
                device=tensor_device(self.compute_device),
                stop=shard.stop,
                on_progress=shard.on_progress,
                pack=pack,
                inputs=shard.inputs,
                images=shard.planned_images,
            )
        self.shard_stats = asdict(shard.stats(outcome))  # plain data: UI-readable
        self.next(self.join)

    @card(type="blank", id="report")
    @step
    def join(self, inputs):
        from steps.preprocess.report import build_report

        stats = self.merge_shards(inputs)
        summary = self.finish_summary(sum((RunSummary.of_shard(s) for s in stats), RunSummary()))
        source = input_format(self.shard_plan["input_format"]).row_reader(open_storage(self.input_uri))
        render(build_report(stats, summary, source, open_storage(self.output_uri)))
        self.next(self.end)


if __name__ == "__main__":
    PreprocessFlow()
