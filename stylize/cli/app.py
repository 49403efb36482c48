"""The ``stylize`` command line: parses options, calls the typed API, prints.

Errors the user can fix come out as one ``error: ...`` line on stderr with exit
code 2 (1 when training diverges, 130 when interrupted), never a traceback.
"""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stylize.cli.display import ProgressBars, notice, print_table, stderr
from stylize.devices import DEFAULT_DEVICE, DEVICE_CHOICES
from stylize.errors import InvalidSetting, StylizeError, TrainingInterrupted
from stylize.fileio import check_writable, refuse_overwriting
from stylize.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_VARIABLE, expand_inputs, load_image, output_format
from stylize.inference.controls import MAX_SCALE, StyleControls
from stylize.inference.exported import EXPORT_FORMATS, SUFFIXES, check_format, export_model
from stylize.inference.optimization import OPTIMIZERS, LevelReport, OptimizationSettings, StyleImage, StyleOptimizer
from stylize.inference.outputs import FilesResult, default_video_output, plan_outputs, result_name, stylize_files
from stylize.inference.stylizer import (
    AUTO_TILE_PIXELS,
    AUTO_TILE_ROWS,
    COMPILE_MIN_IMAGES,
    ImageLimits,
    ImageStylizer,
    InferenceSettings,
    load_stylizer,
)
from stylize.inference.temporal import StabilizerSettings
from stylize.inference.video import ENCODERS, VideoSettings, count_frames, encoder_for, stylize_video
from stylize.model.blend import Blend, load_blended
from stylize.model.files import DEFAULT_STYLE, bundled_models, default_model_name, models_dir
from stylize.model.network import RESAMPLINGS
from stylize.model.norms import norm_names
from stylize.model.styles import style_names
from stylize.report.compare import CompareSettings
from stylize.report.compare import compare as run_comparison
from stylize.report.curves import write_curves
from stylize.report.sheet import numbers_path, write_sheet
from stylize.training.config import CPU_RECIPE, GPU_RECIPE, TrainConfig, TrainingRecord, plan_norm_runs
from stylize.training.distributed import rank_label
from stylize.training.loop import StepReport, train_norms
from stylize.training.losses import LossWeights
from stylize.training.schedule import LR_SCHEDULES
from stylize.training.vgg import DEFAULT_CONTENT_LAYER, loss_network_names
from stylize.version import VERSION

app = typer.Typer(
    name="stylize",
    help="Fast neural style transfer (Johnson et al. 2016) with switchable instance / batch norm.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Typer bundles its own copy of click in new releases and uses click in old ones;
# its BadParameter derives from whichever ClickException is in use (so no static type).
_UsageProblem: Any = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException")

DEVICE_HELP = f"where to run: {', '.join(DEVICE_CHOICES)} or cuda:N"


def _by_device(setting: str) -> str:
    return f"{getattr(CPU_RECIPE, setting)} on a CPU, {getattr(GPU_RECIPE, setting)} on a GPU"


def _weighted_names(option: str, value: str, separator: str, noun: str) -> list[tuple[str, float | None]]:
    """``a:4,b`` (separator ``:``) -> [("a", 4.0), ("b", None)]; errors name ``option`` and its ``noun``."""
    entries = [entry.strip().partition(separator) for entry in value.split(",") if entry.strip()]
    try:
        weighted = [(name.strip(), float(weight) if weight.strip() else None) for name, _, weight in entries]
    except ValueError:
        weighted = None
    if weighted is None or any(weight is not None and not math.isfinite(weight) for _, weight in weighted):
        form = f"{noun}{separator}WEIGHT"
        raise StylizeError(f"{option} {value!r}: a weight is not a finite number (write {form})")
    return weighted


def _style_layers(option: str | None) -> dict[str, tuple]:
    """``relu1_2:4,relu2_2`` -> the layers and, if any weight is given, every layer's weight."""
    entries = _weighted_names("--style-layers", option or "", ":", "LAYER")
    layers = tuple(name for name, _ in entries)
    if all(weight is None for _, weight in entries):
        return {"style_layers": layers}
    return {"style_layers": layers, "style_layer_weights": tuple(1.0 if w is None else w for _, w in entries)}


def _style_mix(option: str | None) -> dict[str, float] | None:
    """``starry-night=0.7,the-scream=0.3`` -> style name -> weight; one name alone weighs 1."""
    if option is None:
        return None
    entries = _weighted_names("--style-mix", option, "=", "NAME")
    if not entries:
        raise StylizeError("--style-mix names no style (write NAME or NAME=WEIGHT,...)")
    return {name: 1.0 if weight is None else weight for name, weight in entries}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stylize {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Fast neural style transfer with switchable normalization."""


# Options that train and image --style share.
LossNetworkOption = Annotated[str, typer.Option(help=f"VGG for the loss: {', '.join(loss_network_names())}.")]
LossNetworkWeightsOption = Annotated[
    Path | None,
    typer.Option(
        "--loss-network-weights",
        "--loss-weights",
        help="Torchvision-format VGG state dict; default: download torchvision's ImageNet weights.",
    ),
]


ContentLayerOption = Annotated[str, typer.Option(help="VGG layer of the content loss.")]
StyleLayersOption = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated VGG layers of the style loss, each optionally LAYER:WEIGHT "
        "(relu1_2:4,relu2_2; a layer without a weight weighs 1); default: the last ReLU of blocks 1-4, "
        "the first at 0.25 (at 1 it paints saturated blobs)."
    ),
]


@app.command()
def train(
    context: typer.Context,
    style_images: Annotated[
        list[Path],
        typer.Argument(
            help="The style image (a painting) to learn; several for one multi-style network "
            "(--norm conditional-instance)."
        ),
    ],
    data: Annotated[Path, typer.Option(help="Folder of training photos, searched recursively.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Model file to write (starry-night.safetensors), or a folder: FOLDER/STYLE-NORM.safetensors."
        ),
    ],
    norm: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Normalization layers: {', '.join(norm_names())}. Repeat it to train one model per norm "
            f"with identical settings and seed into the --out folder. Default: {TrainConfig.norm}.",
            show_default=False,
        ),
    ] = None,
    groups: Annotated[int, typer.Option(help="Channel groups of the group norm (divides 32).")] = TrainConfig.groups,
    resampling: Annotated[
        str | None,
        typer.Option(
            help=f"{' or '.join(RESAMPLINGS)}: how the network changes resolution. antialiased (blur before "
            "each stride-2 convolution, bilinear upsampling) paints no weave locked to a 4-pixel grid; "
            "nearest is Johnson et al.'s. Default: the --init model's, else antialiased."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help=f"Total optimizer steps; default {_by_device('steps')}.")] = None,
    batch_size: Annotated[int, typer.Option(help="Photos per step.")] = TrainConfig.batch_size,
    image_size: Annotated[
        int | None, typer.Option(help=f"Side of the square training crops, px; default {_by_device('image_size')}.")
    ] = None,
    style_size: Annotated[
        int | None,
        typer.Option(
            help=f"Long side of the style image, px (sets the stroke size); default {_by_device('style_size')}."
        ),
    ] = None,
    content_weight: Annotated[
        float, typer.Option(help="Weight of the content loss (relative to the photo's features).")
    ] = TrainConfig.content_weight,
    style_weight: Annotated[
        float, typer.Option(help="Weight of the style loss (relative to the style's Gram matrices).")
    ] = TrainConfig.style_weight,
    tv_weight: Annotated[float, typer.Option(help="Weight of the total-variation loss.")] = TrainConfig.tv_weight,
    shift_weight: Annotated[
        float,
        typer.Option(help="Weight of the shift-equivariance loss (no lattice on flat areas, steadier video)."),
    ] = TrainConfig.shift_weight,
    lr: Annotated[float, typer.Option(help="Peak Adam learning rate.")] = TrainConfig.lr,
    lr_schedule: Annotated[
        str, typer.Option(help=f"After the warm-up: {', '.join(LR_SCHEDULES)} (decays to 0 at the last step).")
    ] = TrainConfig.lr_schedule,
    warmup_steps: Annotated[
        int, typer.Option(help="Steps of linear learning-rate warm-up.")
    ] = TrainConfig.warmup_steps,
    precision: Annotated[
        str,
        typer.Option(help="auto: bf16 autocast where the GPU or CPU has native bf16, else fp32; or fp32, bf16."),
    ] = TrainConfig.precision,
    init: Annotated[
        str | None,
        typer.Option(
            help="Start from a trained model (bundled name or file) of the same norm: a new style in minutes. "
            "An instance- or batch-norm model also starts every style of a --norm conditional-instance or "
            "conditional-batch run.",
        ),
    ] = None,
    only_norm_params: Annotated[
        bool,
        typer.Option(
            "--only-norm-params",
            help="With --init a multi-style model, or an instance- or batch-norm one: add this style to it, "
            "training only the norm layers' new scale and shift (all else frozen): a new style in minutes. "
            "A style the model holds (same name) is retrained in place.",
        ),
    ] = False,
    loss_network: Annotated[
        list[str] | None,
        typer.Option(
            help=f"VGG for the loss: {', '.join(loss_network_names())}. Repeat it to train against the mean of "
            f"several networks' losses. Default: {TrainConfig.loss_network}.",
            show_default=False,
        ),
    ] = None,
    loss_network_weights: Annotated[
        list[Path] | None,
        typer.Option(
            "--loss-network-weights",
            "--loss-weights",
            help="Torchvision-format VGG state dict, once per --loss-network in the same order; "
            "default: download torchvision's ImageNet weights.",
        ),
    ] = None,
    content_layer: ContentLayerOption = DEFAULT_CONTENT_LAYER,
    style_layers: StyleLayersOption = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = TrainConfig.device,
    seed: Annotated[int, typer.Option(help="Seed for weights, data order and crops.")] = TrainConfig.seed,
    workers: Annotated[
        int | None,
        typer.Option(help=f"Data loading processes (0: in the main process); default {_by_device('workers')}."),
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option(help="Checkpoint every N steps into OUT.ckpt/ (0: only on Ctrl-C).")
    ] = TrainConfig.checkpoint_every,
    resume: Annotated[Path | None, typer.Option(help="Continue from a checkpoint file or an OUT.ckpt/ folder.")] = None,
    sync_bn: Annotated[
        bool,
        typer.Option("--sync-bn", help="Under torchrun: batch-norm statistics over all processes' batches (CUDA)."),
    ] = False,
) -> None:
    """Train a style network on a folder of photos; under torchrun, on every GPU it starts.

    --batch-size is per process: torchrun --nproc_per_node 4 with --batch-size 4 takes 16 photos per step.
    """
    loss_networks, weights_files = loss_network or [TrainConfig.loss_network], loss_network_weights or []
    config = TrainConfig(
        style_image=style_images[0],
        more_style_images=tuple(style_images[1:]),
        data=data,
        out=out,
        norm=norm[0] if norm else TrainConfig.norm,
        groups=groups,
        resampling=resampling,
        steps=steps,
        batch_size=batch_size,
        image_size=image_size,
        style_size=style_size,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        shift_weight=shift_weight,
        lr=lr,
        lr_schedule=lr_schedule,
        warmup_steps=warmup_steps,
        precision=precision,
        init=init,
        only_norm_params=only_norm_params,
        loss_network=loss_networks[0],
        loss_network_weights=weights_files[0] if weights_files else None,
        more_loss_networks=tuple(loss_networks[1:]),
        more_loss_network_weights=tuple(weights_files[1:]),
        content_layer=content_layer,
        **_style_layers(style_layers),
        seed=seed,
        device=device,
        workers=workers,
        checkpoint_every=checkpoint_every,
        resume=resume,
        sync_bn=sync_bn,
        command=shlex.join(["stylize", *(context.obj or [])]),
    )
    if only_norm_params and norm:
        raise StylizeError("--only-norm-params trains the --init model's own norm: leave out --norm")
    runs = plan_norm_runs(config, norm or [config.norm])
    with ProgressBars() as bars:
        label = "training one style's norm parameters" if only_norm_params else "training {}"
        tasks = {run.out: bars.add(label.format(run.norm), total=steps) for run in runs}

        def show(run: TrainConfig, report: StepReport) -> None:
            status = (
                f"content {report.content:.3g}  style {report.style:.3g}  tv {report.tv:.3g}"
                + (f"  shift {report.shift:.3g}" if run.shift_weight else "")
                + f"  {report.images_per_second:.1f} img/s"
            )
            bars.update(tasks[run.out], completed=report.step, total=report.steps, status=status)

        results = train_norms(runs, on_progress=show, on_notice=notice)
    written = [result for result in results if result.wrote_files]
    for result in written:
        typer.echo(f"wrote {result.model} ({result.steps} steps, {result.seconds:.0f} s); metrics: {result.metrics}")
    skipped = max(len(result.unreadable_files) for result in written) if written else 0
    if skipped:
        typer.echo(f"skipped {skipped} unreadable training images", err=True)


def _load_stylizer(
    models: list[str] | None,
    mix: float | None,
    style_mix: str | None,
    device: str,
    settings: InferenceSettings,
    controls: StyleControls,
    images: int,
) -> ImageStylizer:
    """The stylizer image and video use: ``--model`` (twice to blend; a multi-style
    model's ``--style-mix``), or the bundled default."""
    blend = _blend(models or [], mix)
    if not models:
        try:
            models = [default_model_name()]
        except StylizeError as error:
            raise StylizeError(f"{error}: pass --model with a model file") from None
        notice(f"no --model given: using the bundled {models[0]} ('stylize models' lists the others)")
    return load_stylizer(
        models[0], device, settings, controls, images, on_notice=notice, blend=blend, style_mix=_style_mix(style_mix)
    )


def _blend(models: list[str], mix: float | None) -> Blend | None:
    """The second of two models as a ``Blend``; None for one model."""
    if len(models) > 2:
        raise StylizeError("give one model, or two with --mix to blend them")
    if mix is not None and len(models) != 2:
        raise StylizeError("--mix blends two models: give two")
    return Blend(models[1], Blend.mix if mix is None else mix) if len(models) == 2 else None


# Options that image and video share.
ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        help=f"A bundled model's name, a model file, or an exported file; default: {DEFAULT_STYLE}. "
        "Twice: blend two models fine-tuned from one parent (see --mix)."
    ),
]
MixOption = Annotated[
    float | None,
    typer.Option(
        help=f"With two models: the second one's share of every weight, 0..1; default {Blend.mix:g}.",
        show_default=False,
    ),
]
StyleMixOption = Annotated[
    str | None,
    typer.Option(
        help="A multi-style model's style (NAME), or a mix of its styles: NAME=WEIGHT,... (weights are "
        "normalised); default: its first style. 'stylize models' lists each model's styles.",
        show_default=False,
    ),
]
DeviceOption = Annotated[str, typer.Option(help=DEVICE_HELP)]
PrecisionOption = Annotated[
    str,
    typer.Option(
        help="auto: bf16 for instance-norm models where bf16 is native (CUDA, CPUs with AVX512-BF16 or AMX; "
        "visually the same, about 2x faster on such a CPU), else fp32; or fp32 (exact), bf16."
    ),  # fmt: skip
]
CompileOption = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile", help=f"torch.compile the network; default: for {COMPILE_MIN_IMAGES}+ images."
    ),
]
TileOption = Annotated[
    int | None,
    typer.Option(
        help=f"Run each layer in bands of this many rows: same output, less memory; 0: off; "
        f"default: {AUTO_TILE_ROWS}, or whole maps when compiled (up to "
        f"{AUTO_TILE_PIXELS // 1_000_000} megapixels)."
    ),  # fmt: skip
]
PreserveColorOption = Annotated[
    bool, typer.Option("--preserve-color", help="Keep the photo's colours: only lightness is stylized.")
]
StrengthOption = Annotated[
    float, typer.Option(help="0: the photo, 1: full style; blends in a perceptual colour space (Oklab).")
]
ScaleOption = Annotated[
    float,
    typer.Option(
        help=f"Stroke scale: stylize at this fraction of the size (0.5: strokes twice as large, "
        f"detail kept; up to {MAX_SCALE:g})."
    ),  # fmt: skip
]


@app.command()
def image(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    model: ModelOption = None,
    mix: MixOption = None,
    style_mix: StyleMixOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output file (one input) or folder; default: NAME-MODEL.EXT in the current folder."),
    ] = None,
    max_size: Annotated[int | None, typer.Option(help="Shrink so the long side is at most this many px.")] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            help=f"Refuse larger images (decompression bombs); default ${MAX_PIXELS_VARIABLE} or "
            f"{DEFAULT_MAX_PIXELS:,}."
        ),  # fmt: skip
    ] = None,
    device: DeviceOption = DEFAULT_DEVICE,
    precision: PrecisionOption = InferenceSettings.precision,
    use_compile: CompileOption = None,
    tile: TileOption = None,
    preserve_color: PreserveColorOption = False,
    strength: StrengthOption = StyleControls.strength,
    scale: ScaleOption = StyleControls.scale,
    style: Annotated[
        list[str] | None,
        typer.Option(
            help="Instead of --model: a painting to stylize with by optimising each photo's pixels (Gatys et al.; "
            "minutes, no training). PATH or PATH:WEIGHT; repeat to blend paintings."
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="--style: optimiser steps at each level.")] = OptimizationSettings.steps,
    levels: Annotated[
        int, typer.Option(help="--style: coarse-to-fine levels (3: quarter, half, then full size).")
    ] = OptimizationSettings.levels,
    optimizer: Annotated[
        str, typer.Option(help=f"--style: {' or '.join(OPTIMIZERS)}.")
    ] = OptimizationSettings.optimizer,
    content_weight: Annotated[float, typer.Option(help="--style: content loss weight.")] = LossWeights.content,
    style_weight: Annotated[float, typer.Option(help="--style: style loss weight.")] = LossWeights.style,
    tv_weight: Annotated[float, typer.Option(help="--style: total variation weight.")] = LossWeights.tv,
    style_size: Annotated[
        int | None, typer.Option(help="--style: long side of the paintings, px; default: the photo's.")
    ] = None,
    loss_network: LossNetworkOption = OptimizationSettings.loss_network,
    loss_network_weights: LossNetworkWeightsOption = None,
    content_layer: ContentLayerOption = DEFAULT_CONTENT_LAYER,
    style_layers: StyleLayersOption = None,
) -> None:
    """Stylize images with a trained model or an exported (ONNX, TorchScript) file, or with
    any painting by optimisation (--style)."""
    limits = ImageLimits(max_size, max_pixels)
    found = expand_inputs(inputs)
    controls = StyleControls(preserve_color=preserve_color, strength=strength, scale=scale)
    with ProgressBars() as bars:
        if style:
            if model:
                raise StylizeError("give --model or --style, not both")
            if mix is not None or style_mix is not None:
                option = "--mix blends two models" if mix is not None else "--style-mix picks a model's styles"
                raise StylizeError(f"{option}; with --style, give PATH:WEIGHT for each painting")
            optimization = OptimizationSettings(
                steps=steps, levels=levels, optimizer=optimizer, content_weight=content_weight,
                style_weight=style_weight, tv_weight=tv_weight, style_size=style_size, loss_network=loss_network,
                loss_network_weights=loss_network_weights, content_layer=content_layer, precision=precision,
                device=device, **_style_layers(style_layers),
            )  # fmt: skip
            stylizer: ImageStylizer = _style_optimizer(style, optimization, controls, bars)
        else:
            settings = InferenceSettings(precision=precision, compile=use_compile, tile=tile)
            stylizer = _load_stylizer(model, mix, style_mix, device, settings, controls, images=len(found))
        pairs = plan_outputs(found, out, stylizer.name)
        _stylize_files(stylizer, pairs, limits, bars)


def _style_optimizer(
    specs: list[str], settings: OptimizationSettings, controls: StyleControls, bars: ProgressBars
) -> ImageStylizer:
    """``--style PATH[:WEIGHT]``s as a stylizer that optimises, its steps shown on a bar."""
    paintings = [_style_spec(spec) for spec in specs]
    styles = [StyleImage(load_image(path).rgb, weight) for path, weight in paintings]
    task = bars.add("optimising")

    def show(report: LevelReport) -> None:
        height, width = report.size
        bars.update(task, completed=report.step, total=report.steps, status=f"{width}x{height}  loss {report.loss:.3g}")

    name = "+".join(path.stem for path, _ in paintings)
    return StyleOptimizer(styles, settings, controls, name=name, on_step=show, on_notice=notice)


def _style_spec(spec: str) -> tuple[Path, float]:
    """``PATH`` or ``PATH:WEIGHT`` -> (path, weight); a path may hold colons of its own."""
    head, colon, tail = spec.rpartition(":")
    try:
        return (Path(head), float(tail)) if colon else (Path(spec), 1.0)
    except ValueError:
        return Path(spec), 1.0


def _stylize_files(
    stylizer: ImageStylizer, pairs: list[tuple[Path, Path]], limits: ImageLimits, bars: ProgressBars
) -> None:
    """Stylize every (source, destination); bad files among many are listed at the end (exit 2)."""
    plain = {source: result_name(source, stylizer.name) for source, _ in pairs}
    renamed = [f"{source} -> {result.name}" for source, result in pairs if result.name != plain[source]]
    if len(pairs) > 1 and renamed:
        notice(f"{len(renamed)} results renamed so that none replaces another: {', '.join(renamed)}")
    if len(pairs) == 1:
        stylizer.stylize_file(*pairs[0], limits.max_size, limits.max_pixels)
        bars.stop()
        typer.echo(f"wrote {pairs[0][1]}")
        return
    task = bars.add("stylizing", total=len(pairs))
    result = stylize_files(stylizer, pairs, limits, lambda source: bars.update(task, advance=1, status=source.name))
    bars.stop()
    _report_files(result, len(pairs))


def _report_files(result: FilesResult, count: int) -> None:
    typer.echo(f"wrote {len(result.written)} of {count} images")
    if result.failures:
        table = Table("file", "problem", title=f"{len(result.failures)} of {count} images failed", title_justify="left")
        for source, problem in result.failures:
            table.add_row(str(source), problem.replace(str(source), source.name))
        print_table(table, stderr)
        raise typer.Exit(2)


@app.command()
def video(
    source: Annotated[Path, typer.Argument(help="The video to stylize (mp4, mov, mkv, webm, ...).")],
    model: ModelOption = None,
    mix: MixOption = None,
    style_mix: StyleMixOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help=f"Video to write ({', '.join(ENCODERS)}); default: NAME-MODEL.mp4 in the current folder."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Frames per network call.")] = VideoSettings.batch_size,
    quality: Annotated[
        int, typer.Option(help="Encoder CRF: 0 best .. 51 smallest; 18 looks like the source.")
    ] = VideoSettings.quality,
    max_size: Annotated[int | None, typer.Option(help="Shrink frames so the long side is at most this, px.")] = None,
    audio: Annotated[
        bool, typer.Option("--audio/--no-audio", help="Copy the sound (as it is, not re-encoded).")
    ] = True,
    stabilize: Annotated[
        bool,
        typer.Option(
            "--stabilize/--no-stabilize",
            help="Carry the previous output's fine texture along the footage's optical flow (OpenCV) "
            "into each frame, where the flow holds: less flicker. --no-stabilize: each frame on its own.",
        ),
    ] = True,
    carry: Annotated[
        float | None,
        typer.Option(
            help="The previous output's share of the texture where the flow holds and the footage is still "
            f"(half of it where it moves), 0 to below 1 (default {StabilizerSettings.carry:g}).",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = DEFAULT_DEVICE,
    precision: PrecisionOption = InferenceSettings.precision,
    use_compile: CompileOption = None,
    tile: TileOption = None,
    preserve_color: PreserveColorOption = False,
    strength: StrengthOption = StyleControls.strength,
    scale: ScaleOption = StyleControls.scale,
) -> None:
    """Stylize a video in batches of frames, keeping its frame rate and sound; each frame is steadied
    against the previous output along the footage's optical flow (--no-stabilize: frame by frame)."""
    if carry is not None and not stabilize:
        raise InvalidSetting("carry", "sets the stabilizer, which --no-stabilize turns off")
    stabilizer = StabilizerSettings(carry=StabilizerSettings.carry if carry is None else carry) if stabilize else None
    video_settings = VideoSettings(
        batch_size=batch_size, quality=quality, max_size=max_size, audio=audio, stabilizer=stabilizer
    )
    frames = count_frames(source)
    settings = InferenceSettings(precision=precision, compile=use_compile, tile=tile)
    controls = StyleControls(preserve_color=preserve_color, strength=strength, scale=scale)
    stylizer = _load_stylizer(model, mix, style_mix, device, settings, controls, frames or COMPILE_MIN_IMAGES)
    destination = out if out is not None else default_video_output(source, stylizer.name)
    encoder_for(destination)
    check_writable(destination)
    with ProgressBars() as bars:
        task = bars.add("stylizing", total=frames, status=source.name)

        def show(done: int, total: int | None) -> None:
            bars.update(task, completed=done, total=total)

        result = stylize_video(source, destination, stylizer, video_settings, on_progress=show)
    sound = f", sound: {', '.join(result.audio)}" if result.audio else ""
    typer.echo(
        f"wrote {result.path} ({result.frames} frames, {result.width}x{result.height} at {float(result.rate):.3g} fps"
        f"{sound}; {result.frames / max(result.seconds, 1e-9):.1f} frames/s)"
    )
    if result.missing_frames:
        notice(
            f"{result.missing_frames} of the {result.frames + result.missing_frames} frames {source} counts could "
            "not be decoded (a truncated or damaged file?); the video holds the rest"
        )
    if result.letterboxed_frames:
        notice(
            f"the picture size changes within {source}: {result.letterboxed_frames} frames were fitted into "
            f"{result.width}x{result.height} with black bars"
        )


@app.command()
def export(
    models: Annotated[
        list[str], typer.Argument(help="A bundled model's name or a model file; two to export their blend (--mix).")
    ],
    fmt: Annotated[str, typer.Option("--format", help=f"{' or '.join(EXPORT_FORMATS)}.")] = EXPORT_FORMATS[0],
    mix: MixOption = None,
    style_mix: StyleMixOption = None,
    out: Annotated[
        Path | None, typer.Option(help="File to write; default: MODEL.onnx or MODEL.pt in the current folder.")
    ] = None,
) -> None:
    """Export a model, or the blend of two, to ONNX or TorchScript (any batch, height and width)."""
    check_format(fmt)
    loaded = load_blended(models[0], _blend(models, mix), style_mix=_style_mix(style_mix))
    destination = out if out is not None else Path(f"{loaded.info.name}{SUFFIXES[fmt]}")
    if destination.is_dir():
        raise StylizeError(f"--out {destination} is a folder; give a file name")
    check_writable(destination)
    export_model(loaded, fmt, destination)
    typer.echo(f"wrote {destination} ({fmt})")


@app.command()
def compare(
    contents: Annotated[list[Path], typer.Argument(help="Content images (photos).")],
    model: Annotated[
        list[str],
        typer.Option(
            help="A model file, a folder of models, a bundled model, or a bundled style name "
            "(all its norms). Repeat for more columns."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The sheet to write; its numbers go beside it as .json.")] = Path(
        "compare.png"
    ),
    size: Annotated[int, typer.Option(help="Long side of each content image on the sheet, px.")] = CompareSettings.size,
    loss_network: Annotated[
        str | None, typer.Option(help="VGG for the loss numbers; default: the one each model trained with.")
    ] = None,
    loss_network_weights: Annotated[
        Path | None,
        typer.Option(
            "--loss-network-weights",
            "--loss-weights",
            help="VGG state dict for the loss numbers; default: each model's training one.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = CompareSettings.device,
    stylized_only: Annotated[
        bool,
        typer.Option("--stylized-only", help="Show one row per photo, the plain result (a gallery); same numbers."),
    ] = False,
    reference_steps: Annotated[
        int,
        typer.Option(
            help="Add a column: each photo optimised for N L-BFGS steps against the first model's own "
            "training loss (a reference for what it allows; 100 steps: about 1.5 minutes a photo at 256 px "
            "on one CPU core). 0: none."
        ),
    ] = CompareSettings.reference_steps,
    styles: Annotated[
        str | None,
        typer.Option(help="A multi-style model's styles to show, NAME,NAME,...; default: a column for each."),
    ] = None,
    blend_strip: Annotated[
        bool,
        typer.Option(
            "--blend-strip",
            help="Three mixes (25, 50, 75%) between each two neighbouring columns: models fine-tuned "
            "from one parent, or the styles of a multi-style model.",
        ),
    ] = False,
) -> None:
    """Compare models (instance vs batch norm, ...) side by side: a sheet and its numbers."""
    settings = CompareSettings(
        size=size,
        device=device,
        loss_network=loss_network,
        loss_network_weights=loss_network_weights,
        stylized_only=stylized_only,
        reference_steps=reference_steps,
        styles=tuple(name.strip() for name in (styles or "").split(",") if name.strip()),
        blend_strip=blend_strip,
    )
    output_format(out)
    for content in contents:
        for written in (out, numbers_path(out)):
            refuse_overwriting(content, written)
    check_writable(out)
    with ProgressBars(transient=True) as bars:
        task = bars.add("comparing")

        def show(index: int, count: int, name: str) -> None:
            bars.update(task, total=count, completed=index, status=name)

        comparison = run_comparison(contents, model, settings, on_stage=show)
    numbers = write_sheet(comparison, out)
    table = Table("model", "norm", "Δ contrast", "Δ batch", "Δ train/eval", "lattice", "content loss", "style loss",
                  "style vs photo", title="output change (Δ): mean |difference|, 0..255")  # fmt: skip
    for report in comparison.reports:
        table.add_row(report.info.name, report.info.config.norm, *report.shown())
    if comparison.reference is not None:
        table.add_row(f"optimisation, {comparison.reference.steps} steps", "", *comparison.reference.shown())
    print_table(table)
    for note in dict.fromkeys(report.losses.source for report in comparison.reports if report.losses.content is None):
        typer.echo(f"losses: {note} (pass --loss-network-weights)", err=True)
    typer.echo(f"wrote {out} and {numbers}")


@app.command()
def curves(
    metrics: Annotated[list[Path], typer.Argument(help="Training metrics files (NAME.metrics.jsonl).")],
    out: Annotated[Path, typer.Option(help="The figure to write.")] = Path("curves.png"),
) -> None:
    """Draw content, style and total loss per step for training runs on one figure."""
    runs = write_curves(metrics, out)
    typer.echo(f"wrote {out} ({len(runs)} runs, {sum(len(run.steps) for run in runs)} steps)")


@app.command()
def models() -> None:
    """List the bundled models."""
    found = bundled_models()
    if not found:
        typer.echo(f"no bundled models in {models_dir()}")
        return
    table = Table("name", "norm", "style", "image size", "steps", "started from")
    for info in found:
        record = TrainingRecord.of(info.training)
        if record is None:  # imported, or without its settings
            table.add_row(info.name, info.config.norm, ", ".join(style_names(info)), "", "", "")
            continue
        init = record.settings.init
        started_from = Path(init).stem if init else "scratch"
        table.add_row(
            info.name,
            info.config.norm,
            ", ".join(style_names(info)),
            str(record.settings.image_size),
            str(record.steps_done),
            started_from,
        )
    print_table(table)


def _in_cli_terms(error: StylizeError) -> str:
    """The library names settings as the API does; here they are options."""
    if isinstance(error, InvalidSetting):
        return f"--{error.setting.replace('_', '-')} {error.problem}"
    if isinstance(error, TrainingInterrupted):
        return f"{error}. Continue with the same command plus --resume {error.resume_from}"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising for every expected failure."""
    command = typer.main.get_command(app)
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        # obj: the command line as given, which training keeps in the model file.
        result = command.main(args=args, prog_name="stylize", standalone_mode=False, obj=args)
    except StylizeError as error:
        typer.echo(f"error: {rank_label()}{_in_cli_terms(error)}", err=True)
        return error.exit_code
    except _UsageProblem as error:
        typer.echo(f"error: {error.format_message()}", err=True)
        return error.exit_code
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("error: interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
