"""`noiseal-ray run`: the whole NoiseAL job on a corpus (local Ray or a cluster)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from noiseal_ray.commands.options import Address, IdCol, LabelCol, Seed, TextCol

# Where a quiet run keeps what Ray and the libraries print, relative to the run folder.
RAY_LOG = "logs/ray.log"


def run(
    data: Annotated[Optional[str], typer.Option("--data", help="Corpus (.csv/.jsonl/.parquet, local or URI). Default: the shipped sample.")] = None,
    # str, not Path: pathlib folds "s3://b/k" into "s3:/b/k", and the refusal should quote what was typed.
    out: Annotated[str, typer.Option("--out", help="Run directory, a local or mounted path (created; rerun the same command to resume).")] = "noiseal-out",
    config_file: Annotated[Optional[Path], typer.Option("--config", help="YAML file with any run option; flags override it.")] = None,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
    clean_label_col: Annotated[Optional[str], typer.Option("--clean-label-col", help="True labels, for evaluation only.")] = None,
    test_data: Annotated[Optional[str], typer.Option("--test-data", help="Clean test set: test accuracy per round.")] = None,
    reviewed: Annotated[Optional[List[str]], typer.Option("--reviewed", help="Reviewed labels (a file `noiseal-ray export` wrote, or an id,label table; repeat for several): trusted, never changed, always clean, first as demonstrations.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Ray Train workers (DDP) [default: 2].")] = None,
    annotator: Annotated[Optional[str], typer.Option("--annotator", help="none | knn | llm [default: knn].")] = None,
    address: Address = None,
    seed: Seed = None,
    warmup_epochs: Annotated[Optional[int], typer.Option("--warmup-epochs", min=0)] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=0)] = None,
    warmup_from: Annotated[Optional[str], typer.Option("--warmup-from", help="Use this model folder (another run's rounds/r0/model) as the warm-up fit: compare methods from the same warm-up.")] = None,
    strong_model: Annotated[Optional[str], typer.Option("--strong-model", help="Encoder folder or hub id (default: packaged MiniLM).")] = None,
    llm_model: Annotated[Optional[str], typer.Option("--llm-model", help="LLM folder or hub id (default: packaged SmolLM2).")] = None,
    llm_endpoint: Annotated[Optional[str], typer.Option("--llm-endpoint", help="Use this OpenAI-compatible endpoint instead of deploying one.")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", min=8, help="Max tokens per text [default: 128].")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Rows per optimizer step, split over the workers [default: 32].")] = None,
    hard_policy: Annotated[Optional[str], typer.Option("--hard-policy", help="Final label of H: strong | given.")] = None,
    change_min_prob: Annotated[Optional[float], typer.Option("--change-min-prob", min=0.0, max=0.999, help="Change a label only where the final strong model predicts the new one with at least this probability; elsewhere it stays, marked held for review [default: 0, every suggested change].")] = None,
    change_min_test_precision: Annotated[Optional[float], typer.Option("--change-min-test-precision", min=0.0, max=1.0, help="Change a label only to a class the final strong model predicts on the clean --test-data with at least this precision (0.5: a change is then more likely right than the label it replaces; 0: off) [default: 0.5 with --test-data, else off].")] = None,
    change_precision_scope: Annotated[Optional[str], typer.Option("--change-precision-scope", help="The test precision of a change g -> f is over every test row predicted f (class) or those of true label f or g (move: is f more likely right than g), or that weighed by how often rows labelled g are f (transition) [default: transition].")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="R/P/H split rule, a name of noiseal_ray.split.RULES; class-mean is the method's own [default: gmm|class-mean-strong/weak-mean].")] = None,
    loss_norm: Annotated[Optional[str], typer.Option("--loss-norm", help="Per-subset losses: subset (means) | rows (sums over the batch) [default: rows].")] = None,
    hard_loss: Annotated[Optional[str], typer.Option("--hard-loss", help="What H trains on: given (its given labels) | embmix (the method's EmbMix on the model's predictions) [default: embmix].")] = None,
    storage_path: Annotated[Optional[str], typer.Option("--storage-path", help="Ray Train storage (URI on multi-node).")] = None,
    train_placement: Annotated[Optional[str], typer.Option("--train-placement", help="Train workers' placement: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD [default: PACK].")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip report.html.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, do nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray's own messages and the workers' logs here (default: OUT/logs/ray.log).")] = False,
) -> None:
    """Find and fix wrong labels: co-train, partition into R/P/H, relabel P, write labels.parquet.

    Examples:
      noiseal-ray run                      # shipped sample, local Ray, offline models
      noiseal-ray run --data tickets.csv --text-col body --label-col queue --out runs/tickets --workers 8
    """
    # Deferred: cli.py imports every command module, and --help must not load the pipeline.
    from noiseal_ray.config import make_config
    from noiseal_ray.console import Terminal, others_to_log
    from noiseal_ray.pipeline import Progress, apply_sample_defaults, interruption_message, run_pipeline
    from noiseal_ray.rundir import check_run_dir_path, check_writable, hold_run_dir

    check_run_dir_path(out)  # run_pipeline checks too; here it also stops a --dry-run that could never run

    overrides = dict(data=data, text_col=text_col, label_col=label_col, id_col=id_col,
                     clean_label_col=clean_label_col, test_data=test_data,
                     reviewed=(reviewed[0] if len(reviewed) == 1 else list(reviewed)) if reviewed else None, workers=workers,
                     annotator=annotator,
                     address=address, seed=seed, warmup_epochs=warmup_epochs, rounds=rounds, warmup_from=warmup_from,
                     strong_model=strong_model, llm_model=llm_model, llm_endpoint=llm_endpoint,
                     max_length=max_length, batch_size=batch_size, hard_policy=hard_policy, split=split,
                     loss_norm=loss_norm, hard_loss=hard_loss, change_min_prob=change_min_prob,
                     change_min_test_precision=change_min_test_precision,
                     change_precision_scope=change_precision_scope,
                     storage_path=storage_path, train_placement=train_placement,
                     report=False if no_report else None)
    cfg = apply_sample_defaults(make_config(file=config_file, overrides=overrides))
    if dry_run:
        from noiseal_ray.plan import describe_plan

        typer.echo(describe_plan(config=cfg, out=str(out)))
        return
    typer.echo(f"noiseal-ray run: {cfg.data} -> {out} ({cfg.workers} workers, annotator {cfg.annotator})")
    if verbose:
        os.environ["NOISEAL_VERBOSE"] = "1"  # ray_session streams the workers' logs too
    check_writable(out)
    with hold_run_dir(out):  # refuse a folder another run holds before our log goes into it
        pass
    ray_log = None if verbose else Path(out) / RAY_LOG
    try:
        # Ray's own lines (raylet warnings, C++ core-worker notes, Ray Data's INFO) go to the log.
        with others_to_log(ray_log) as stream:
            progress = Progress(enabled=not quiet, terminal=Terminal(stream=stream))
            metrics = run_pipeline(config=cfg, out=str(out), progress=progress)
    except KeyboardInterrupt:
        typer.secho(interruption_message(out=out), err=True)
        raise typer.Exit(130) from None
    typer.echo(_summary_line(metrics))
    typer.echo(f"outputs: {out}/labels.parquet, {out}/model/, {out}/metrics.json"
               + (f"; Ray's own messages: {ray_log}" if ray_log else ""))


def _summary_line(metrics: dict) -> str:
    """The "done: ..." line of a finished run: sizes, changes, and accuracies when measured."""
    fin = metrics.get("final", {})
    line = f"done: {metrics['rows']} rows, R {fin['sizes']['R']} P {fin['sizes']['P']} H {fin['sizes']['H']}, " \
           f"{fin.get('changed', 0)} labels changed"
    if "recovery" in fin:
        rec = fin["recovery"]
        line += f"; label accuracy {rec['given_accuracy']:.3f} -> {rec['final_accuracy']:.3f}"
    if (fin.get("correction") or {}).get("precision") is not None:
        line += f" ({fin['correction']['precision']:.1%} of the changes fix a wrong label)"
    if "test_accuracy_last" in fin:
        line += f"; test accuracy {fin['test_accuracy_last']:.4f}"
    return line
