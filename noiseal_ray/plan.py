"""`run --dry-run`: validate the input and print what a run would do, without doing it."""

from __future__ import annotations

from noiseal_ray.config import RunConfig
from noiseal_ray.finalize import gate_rules
from noiseal_ray.ray_session import local_num_cpus
from noiseal_ray.stages.ingest import ingest
from noiseal_ray.train import steps_per_epoch


def _reviewed_line(*, config: RunConfig, facts: dict) -> str:
    """The plan's line on reviewed rows (the files are read and checked now, like the corpus)."""
    files = config.reviewed_files()
    line = (f"reviewed:    {', '.join(files)}: {facts['reviewed']} trusted row(s), {facts['reviewed_changed']} of them "
            "relabeled by the reviewer; never changed, always clean (R), first as demonstrations")
    if config.refute_confidence is not None and facts["reviewed_suggested"]:
        moves, names = facts["move_reviews"], facts["label_names"]
        shown = ", ".join(f"{names[m['given']]} -> {names[m['suggested']]}" for m in moves if m["refuted"])
        line += (f"\n             they test {len(moves)} move(s) of the run that exported them; "
                 f"refuted, so held back: {shown or 'none'}")
    return line


def _changes_line(*, config: RunConfig) -> str:
    """Which label changes the run may make (the change gate)."""
    rules = gate_rules(min_prob=config.change_min_prob, min_test_precision=config.min_test_precision(),
                       scope=config.change_precision_scope)
    return "changes:     " + (f"a label changes only where {' and '.join(rules)}; the others stay, marked held"
                              if rules else "every change the method suggests")


def describe_plan(*, config: RunConfig, out: str) -> str:
    """A human-readable plan: data, classes, rounds, annotator load and Ray resources."""
    from noiseal_ray.models.strong import resolve_encoder  # deferred: the model module imports torch

    facts = ingest(config=config, table_dir=None)  # every check of a run's ingest, piece by piece, nothing written
    n, c = facts["n_rows"], len(facts["label_names"])
    counts = dict(zip(facts["label_names"], facts["class_counts"]))
    shown = ", ".join(f"{k} {v}" for k, v in list(counts.items())[:12]) + (" ..." if c > 12 else "")
    epochs = config.warmup_epochs + config.rounds * config.epochs_per_round
    # The batch is global (split over the workers), so the step count hardly depends on them.
    trained = epochs - (config.warmup_epochs if config.warmup_from else 0)
    steps = steps_per_epoch(rows=n, batch_size=config.batch_size, workers=config.workers) * trained
    gpu = "auto (GPUs if the cluster has them)" if config.use_gpu is None else ("yes" if config.use_gpu else "no")
    lines = [
        f"data:        {config.data}: {n} rows, {c} classes ({shown})",
        f"             text {config.text_col!r}, label {config.label_col!r}, id {config.id_col or 'row number'}"
        + (f", clean labels {config.clean_label_col!r} (evaluation only)" if config.clean_label_col else ""),
        f"test data:   {config.test_data or 'none'}",
        *([_reviewed_line(config=config, facts=facts)] if config.reviewed_files() else []),
        f"models:      strong {resolve_encoder(config.strong_model)}; weak BiLSTM "
        f"({config.weak_embed_dim}-d embeddings, {config.weak_hidden} hidden)",
        f"schedule:    warm-up {config.warmup_epochs} epoch(s)"
        f"{f' (adopted from {config.warmup_from}, not trained)' if config.warmup_from else ''}, then {config.rounds} round(s) of "
        f"{config.epochs_per_round} epoch(s): {epochs} epochs, about {steps} optimiser steps per model",
        f"method:      split {config.split}; losses "
        + ("weigh every row alike" if config.loss_norm == "rows" else "averaged per subset (R, P, H)")
        + f"; H trains on {'its given labels' if config.hard_loss == 'given' else 'EmbMix of the model predictions'}",
        f"annotator:   {config.annotator}"
        + (f" ({config.llm_model or 'packaged SmolLM2-135M-Instruct'}"
           f"{', endpoint ' + config.llm_endpoint if config.llm_endpoint else ''}); at most one query per sample"
           f" that ever lands in P (each cached), i.e. at most {n}, typically the noisy 10-40%"
           if config.annotator == "llm" else ""),
        f"Ray:         {'join ' + config.address if config.address else f'local Ray with {local_num_cpus(workers=config.workers)} logical CPUs'}; "
        f"Train {config.workers} worker(s) x 1 CPU, GPU {gpu}; "
        f"{config.score_actors or config.workers} scoring actor(s) x 1 CPU"
        + (f"; LLM replicas {config.llm_min_replicas}-{config.llm_max_replicas} (an idle one goes after "
           f"{config.llm_downscale_delay_s:g} s)" if config.annotator == "llm"
           and not config.llm_endpoint else ""),
        _changes_line(config=config),
        f"output:      {out}/labels.parquet ({n} rows), model/, metrics.json" + (", report.html" if config.report else ""),
    ]
    return "\n".join(lines)
